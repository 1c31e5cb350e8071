"""Bad input, table-driven: malformed study files and command lines.

Every case must stop with one ``error:`` line on stderr that names the field (or the file, or the
option) at fault, exit with code 2, and leave the working directory exactly as it was: no Optuna
storage, no MLflow database, no ``mlruns``.
"""
from __future__ import annotations

import http.server
import socketserver
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import pytest
import yaml

from tests.helpers import (BASE_STUDY, LR, assert_one_error_line, environment, hpo_command, learner_study, main_in,
                           study_dict, study_with)

# The contents of one file: a YAML mapping, raw text, raw bytes, or None for a folder.
Content = Union[dict[str, Any], str, bytes, None]


@dataclass(frozen=True)
class Case:
    # Must be in the error line: the field path (or file, or option) and why. Text that begins with "error: " must
    # be where the line begins.
    expected: str
    study: Content = field(default_factory=lambda: BASE_STUDY)  # written as study.yaml unless None
    args: tuple[str, ...] = ("study.yaml",)  # the command line after python -m hpo.run
    files: dict[str, Content] = field(default_factory=dict)  # more files in the working directory


def cli(*options: str) -> tuple[str, ...]:
    return ("study.yaml", *options)


SPACE = "learners.protonet.space"
FIXED = "learners.protonet.fixed"
BASE_YAML = yaml.safe_dump(BASE_STUDY, sort_keys=False)
INF, NAN = float("inf"), float("nan")


def categorical(*choices: Any) -> dict[str, Any]:
    return {"type": "categorical", "choices": list(choices)}


def int_range(low: int, high: int, **options: Any) -> dict[str, Any]:
    return {"type": "int", "low": low, "high": high, **options}


CASES: dict[str, Case] = {
    # ---- the file itself
    "malformed YAML": Case("error: study.yaml: line 3, column 8: invalid YAML",
                           "name: t\ndataset: {name: synthetic, ways: 5\n  shots: [1\n"),
    "empty file": Case("study.yaml: a study file is a mapping", ""),
    "YAML list": Case("study.yaml: a study file is a mapping", "- name: t\n- seed: 0\n"),
    "no such study file": Case("nosuch.yaml: cannot read the study file (No such file or directory)",
                               args=("nosuch.yaml",)),
    "study file is a folder": Case("folder.yaml: cannot read the study file (Is a directory)",
                                   args=("folder.yaml",), files={"folder.yaml": None}),
    "unsafe YAML tag": Case("study.yaml: line 1, column 7: invalid YAML: could not determine a constructor for the "
                            "tag 'tag:yaml.org,2002:python/object/apply:os.system'",
                            "name: !!python/object/apply:os.system ['touch pwned']\n"),
    # ---- shape and types
    "unknown top-level key": Case("error: study.yaml: colour: unknown key", study_dict(colour="red")),
    "unknown nested key": Case("error: study.yaml: budget.epochs: unknown key", study_with("budget", epochs=3)),
    "unknown key in a space entry": Case(f"{SPACE}.lr.scale: unknown key",
                                         learner_study({"lr": {**LR, "scale": "log"}})),
    "string for an int": Case("error: study.yaml: budget.iterations: Input should be a valid integer",
                              study_with("budget", iterations="many")),
    "wrong type in space": Case(f"error: study.yaml: {SPACE}.lr.low: ", learner_study({"lr": {**LR, "low": "small"}})),
    "fixed value of wrong type": Case(f"error: study.yaml: {FIXED}.meta_batch: ",
                                      learner_study({"lr": LR}, fixed={"meta_batch": "two"})),
    "list for a mapping": Case("study.yaml: dataset: Input should be a valid dictionary",
                               study_dict(dataset=["synthetic", 5])),
    "negative iterations": Case("budget.iterations: Input should be greater than 0",
                                study_with("budget", iterations=-5)),
    "zero ways": Case("dataset.ways: Input should be greater than 0", study_with("dataset", ways=0)),
    "negative timeout": Case("search.timeout: Input should be greater than 0", study_with("search", timeout=-1)),
    "bad study name": Case("study.yaml: name: String should match pattern", study_dict(name="my/study")),
    "no learners": Case("study.yaml: learners: Dictionary should have at least 1 item", study_dict(learners={})),
    "unknown device": Case("study.yaml: device: Input should be 'auto', 'cpu' or 'cuda'", study_dict(device="tpu")),
    # ---- names that must exist
    "unknown learner": Case("error: study.yaml: learners.protonett: unknown learner",
                            study_dict(learners={"protonett": {"space": {"lr": LR}}})),
    "unknown sampler": Case("error: study.yaml: search.sampler: Input should be 'tpe', 'gp', 'grid' or 'random'",
                            study_with("search", sampler="bayes")),
    "unknown pruner": Case("search.pruner.type: Input should be 'median', 'hyperband' or 'none'",
                           study_with("search", pruner="patient")),
    "unknown dataset": Case("dataset.name: unknown dataset 'mnist'", study_with("dataset", name="mnist")),
    "unknown backbone in fixed": Case(f"{FIXED}.backbone: unknown backbone 'vgg'",
                                      learner_study({"lr": LR}, fixed={"backbone": "vgg"})),
    "unknown backbone in choices": Case(
        f"error: study.yaml: {SPACE}.backbone.choices[1]: unknown backbone 'vgg'",
        learner_study({"backbone": {"type": "categorical", "choices": ["conv4", "vgg"]}})),
    "unknown hyperparameter in fixed": Case(f"error: study.yaml: {FIXED}.lrr: unknown hyperparameter of protonet",
                                            learner_study({"lr": LR}, fixed={"lrr": 0.1})),
    "unknown hyperparameter in space": Case(f"{SPACE}.learning_rate: unknown hyperparameter of protonet",
                                            learner_study({"learning_rate": LR})),
    # ---- search spaces
    "empty space": Case(f"error: study.yaml: {SPACE}: empty", learner_study({}, fixed={"lr": 0.1})),
    "in fixed and in space": Case(f"{SPACE}.lr: given in both fixed and space",
                                  learner_study({"lr": LR}, fixed={"lr": 0.1})),
    "unknown space type": Case(
        f"error: study.yaml: {SPACE}.lr: Input tag 'floaty' found using 'type' does not match",
        learner_study({"lr": {**LR, "type": "floaty"}})),
    "float low above high": Case(f"{SPACE}.lr: low (0.1) must be below high (0.01)",
                                 learner_study({"lr": {**LR, "low": 0.1}})),
    "log with low at 0": Case(f"{SPACE}.lr: log needs low > 0", learner_study({"lr": {**LR, "low": 0.0, "log": True}})),
    "int log with a step": Case(
        f"{SPACE}.meta_batch: log and step cannot be combined",
        learner_study({"meta_batch": {"type": "int", "low": 1, "high": 9, "log": True, "step": 2}})),
    "float step not dividing the range": Case(
        f"{SPACE}.lr: high - low = 0.3 is not a multiple of step = 0.2",
        learner_study({"lr": {"type": "float", "low": 0.1, "high": 0.4, "step": 0.2}})),
    "no categorical choices": Case(f"{SPACE}.lr.choices: List should have at least 1 item",
                                   learner_study({"lr": {"type": "categorical", "choices": []}})),
    "float range on an int": Case(f"error: study.yaml: {SPACE}.meta_batch: meta_batch is int",
                                  learner_study({"meta_batch": {"type": "float", "low": 1, "high": 3}})),
    "milestones outside (0, 1)": Case(
        f"error: study.yaml: {SPACE}.milestones: milestones are fractions of the budget strictly between",
        learner_study({"milestones": {"type": "milestones", "choices": [[0.5, 1.5]]}})),
    "fixed milestones outside (0, 1)": Case(f"{FIXED}.milestones: milestones must be fractions",
                                            learner_study({"lr": LR}, fixed={"milestones": [0.0]})),
    "too many milestones": Case(
        f"{SPACE}.milestones.count: 9 milestones cannot fall on distinct iterations",
        learner_study({"milestones": {"type": "milestones", "count": 9, "low": 0.1, "high": 0.9}})),
    "grid of a continuous range": Case(f"error: study.yaml: {SPACE}.lr: a grid needs a float range with a step",
                                       study_with("search", sampler="grid")),
    "learner's own check": Case("error: study.yaml: learners.meta_baseline.fixed.pretrain_fraction: pretrain_fraction "
                                "must be between 0 and 1, got 1.5", study_dict(learners={"meta_baseline": {
                                    "fixed": {"pretrain_fraction": 1.5}, "space": {"lr": LR}}})),
    # ---- search settings
    "no trials nor timeout": Case("error: study.yaml: search: give n_trials and/or timeout",
                                  study_dict(search={"sampler": "tpe"})),
    "grace period under the heartbeat": Case("search: grace_period (5) must be longer than heartbeat_interval (10)",
                                             study_with("search", grace_period=5)),
    "no failures allowed": Case("search.max_consecutive_failures: Input should be greater than 0",
                                study_with("search", max_consecutive_failures=0)),
    "several workers": Case("error: study.yaml: search.workers: ", study_dict(search={"n_trials": 2, "workers": 3})),
    # ---- data
    "impossible ways for the split": Case(
        "error: study.yaml: dataset: ways=30 is more than the 16 classes of the 'val'", study_with("dataset", ways=30)),
    "shots + queries above the images per class": Case("dataset: shots+queries=25 is more than the 20 images",
                                                       study_with("dataset", shots=10, queries=15)),
    "missing data root": Case("error: study.yaml: dataset.root: no such directory",
                              study_with("dataset", root="nowhere/omniglot")),
    # ---- command line
    "--n-trials 0": Case("error: study.yaml: search.n_trials: Input should be greater than 0",
                         args=cli("--n-trials", "0")),
    "--n-trials -3": Case("study.yaml: search.n_trials: Input should be greater than 0", args=cli("--n-trials", "-3")),
    "--n-trials abc": Case("error: argument --n-trials: invalid int value: 'abc'", args=cli("--n-trials", "abc")),
    "--workers 0": Case("study.yaml: search.workers: ", args=cli("--workers", "0")),
    "--workers 2": Case("error: study.yaml: search.workers: ", args=cli("--workers", "2")),
    "--workers two": Case("error: argument --workers: invalid int value: 'two'", args=cli("--workers", "two")),
    "--learners nosuch": Case("--learners: 'nosuch' is not a learner of this study", args=cli("--learners", "nosuch")),
    "--learners maml2": Case("error: study.yaml: --learners: ", args=cli("--learners", "maml2")),
    "unknown option": Case("error: unrecognized arguments: --colour red", args=cli("--colour", "red")),
    "no study file given": Case("error: the following arguments are required: study", args=()),
    # ---- storage and tracking
    "storage folder missing": Case("error: study.yaml: storage: ",
                                   study_dict(storage="sqlite:///no/such/folder/optuna.db")),
    "unreachable storage": Case("error: study.yaml: storage: cannot connect",
                                study_dict(storage="postgresql+psycopg2://u:hunter2@127.0.0.1:1/db")),
    "--storage with an unknown scheme": Case("study.yaml: storage: invalid database URL mongo://db/optuna",
                                             args=cli("--storage", "mongo://db/optuna")),
    "unreachable PostgreSQL": Case("study.yaml: storage: ", args=cli("--storage", "postgresql://root:pw@127.0.0.1:1/x")),
    "unreachable PostgreSQL (psycopg2)": Case(
        "study.yaml: storage: cannot connect to postgresql+psycopg2://root:***@127.0.0.1:1/x",
        args=cli("--storage", "postgresql+psycopg2://root:pw@127.0.0.1:1/x")),
    "SQLite in a missing folder": Case("study.yaml: storage: the folder of the SQLite file does not exist",
                                       args=cli("--storage", "sqlite:///no/such/optuna.db")),
    "SQLite under a file": Case("study.yaml: storage: the folder of the SQLite file does not exist (or is not a folder)",
                                args=cli("--storage", "sqlite:///blocker/optuna.db"), files={"blocker": "a file"}),
    "SQLite file is a folder": Case("study.yaml: storage: the SQLite file is a folder",
                                    args=cli("--storage", "sqlite:///db"), files={"db": None}),
    "unreachable tracking server in the study file": Case("error: study.yaml: tracking_uri: ",
                                                          study_dict(tracking_uri="http://127.0.0.1:1")),
    "--tracking-uri with an unknown scheme": Case("study.yaml: tracking_uri: invalid database URL ftp://host/runs",
                                                  args=cli("--tracking-uri", "ftp://host/runs")),
    "--tracking-uri without a scheme": Case("study.yaml: tracking_uri: expected a database URL",
                                            args=cli("--tracking-uri", "mlflow.db")),
    "unreachable tracking server": Case("study.yaml: tracking_uri: MLflow server http://u:***@127.0.0.1:1 does not",
                                        args=cli("--tracking-uri", "http://u:pw@127.0.0.1:1")),
    "mlruns is a file": Case("study.yaml: tracking_uri: MLflow keeps artifacts in ", files={"mlruns": "a file"}),
    # ---- files that are not UTF-8 text, keys given twice
    "binary study file": Case("error: study.yaml: not UTF-8 text (byte 0x89 at offset 0)",
                              b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
    "UTF-16 study file": Case("error: study.yaml: not UTF-8 text", BASE_YAML.encode("utf-16")),
    "NUL byte": Case("error: study.yaml: not a text file (a NUL byte at offset 7)", "name: t\0\n" + BASE_YAML[8:]),
    "top-level key twice": Case("error: study.yaml: line 28, column 1: invalid YAML: found duplicate key 'seed'",
                                BASE_YAML + "seed: 1\n"),
    "nested key twice": Case("invalid YAML: found duplicate key 'ways'",
                             BASE_YAML.replace("  ways: 5\n", "  ways: 5\n  ways: 3\n")),
    # ---- numbers that are not finite
    "infinite high": Case(f"error: study.yaml: {SPACE}.lr.high: Input should be a finite number",
                          learner_study({"lr": {**LR, "high": INF}})),
    "NaN low": Case(f"{SPACE}.lr.low: Input should be a finite number", learner_study({"lr": {**LR, "low": NAN}})),
    "NaN step": Case(f"{SPACE}.lr.step: Input should be a finite number",
                     learner_study({"lr": {**LR, "step": NAN}})),
    "NaN lr in fixed": Case(f"error: study.yaml: {FIXED}.lr: lr must be a finite number",
                            learner_study({"meta_batch": int_range(1, 2)}, fixed={"lr": NAN})),
    "'nan' text for lr in fixed": Case(f"{FIXED}.lr: lr must be a finite number",
                                       learner_study({"meta_batch": int_range(1, 2)}, fixed={"lr": "nan"})),
    "infinite weight decay in fixed": Case(f"{FIXED}.weight_decay: weight_decay must be a finite number",
                                           learner_study({"lr": LR}, fixed={"weight_decay": INF})),
    "NaN among the choices": Case(f"error: study.yaml: {SPACE}.lr.choices[1]: lr must be a finite number",
                                  learner_study({"lr": categorical(0.001, NAN)})),
    "infinite timeout": Case("error: study.yaml: search.timeout: Input should be a finite number",
                             study_with("search", timeout=INF)),
    "NaN milestone in fixed": Case(f"{FIXED}.milestones: milestones must be fractions",
                                   learner_study({"lr": LR}, fixed={"milestones": [NAN]})),
    # ---- seeds the samplers refuse
    "negative seed": Case("error: study.yaml: seed: Input should be greater than or equal to 0", study_dict(seed=-1)),
    "seed of 2**32": Case("error: study.yaml: seed: Input should be less than 4294967296", study_dict(seed=2**32)),
    # ---- hyperparameters that can never train
    "negative weight decay": Case(f"error: study.yaml: {FIXED}.weight_decay: weight_decay must be at least 0",
                                  learner_study({"lr": LR}, fixed={"weight_decay": -0.1})),
    "momentum of 1": Case(f"{FIXED}.momentum: momentum must be in [0, 1)",
                          learner_study({"lr": LR}, fixed={"optimizer": "sgd", "momentum": 1.0})),
    "momentum range below 0": Case(f"error: study.yaml: {SPACE}.momentum: momentum must be in [0, 1)",
                                   learner_study({"momentum": {"type": "float", "low": -0.5, "high": 0.5}})),
    "gamma of 0": Case(f"{FIXED}.gamma: gamma must be positive", learner_study({"lr": LR}, fixed={"gamma": 0.0})),
    # ---- training episodes the training split cannot form (64 synthetic classes of 20 images)
    "train_ways above the classes, fixed": Case(
        f"error: study.yaml: {FIXED}: training episodes 100-way 1-shot 5-query (train_ways=100): ways=100 is more "
        f"than the 64 classes of the 'train' split", learner_study({"lr": LR}, fixed={"train_ways": 100})),
    "train_ways above the classes, a choice": Case(f"error: study.yaml: {SPACE}.train_ways.choices[1]: training",
                                                   learner_study({"train_ways": categorical(20, 65)})),
    "train_ways above the classes, a range": Case(f"error: study.yaml: {SPACE}.train_ways: training episodes 80-way",
                                                  learner_study({"train_ways": int_range(5, 80)})),
    "train_queries above the images": Case(f"{FIXED}: training episodes 5-way 1-shot 30-query (train_queries=30): "
                                           f"shots+queries=31 is more than the 20 images",
                                           learner_study({"lr": LR}, fixed={"train_queries": 30})),
    "MAML train_shots + train_queries above the images": Case(
        "error: study.yaml: learners.maml.fixed: training episodes 5-way 10-shot 15-query (train_shots=10, "
        "train_queries=15)", study_dict(learners={"maml": {"fixed": {"train_shots": 10, "train_queries": 15},
                                                           "space": {"lr": LR}}})),
    # ---- names MLflow or Optuna cannot store
    "study name over MLflow's limit": Case("error: study.yaml: name: String should have at most 490 characters",
                                           study_dict(name="n" * 491)),
    "param value over MLflow's limit": Case(f"error: study.yaml: {FIXED}.milestones: longer than the 6000",
                                            learner_study({"lr": LR}, fixed={"milestones": [0.5] * 1300})),
    # ---- accepted silently before: they cannot mean what was written
    "int step larger than the range": Case(f"{SPACE}.meta_batch: high - low = 2 is not a multiple of step = 5",
                                           learner_study({"meta_batch": int_range(1, 3, step=5)})),
    "int step not dividing the range": Case(f"{SPACE}.meta_batch: high - low = 3 is not a multiple of step = 2",
                                            learner_study({"meta_batch": int_range(1, 4, step=2)})),
    "a choice twice": Case(f"error: study.yaml: {SPACE}.lr.choices[2]: 0.001 is given twice",
                           learner_study({"lr": categorical(0.001, 0.01, 0.001)})),
    "a choice twice once coerced": Case(f"{SPACE}.lr.choices[1]: 0.001 is given twice",
                                        learner_study({"lr": categorical(0.001, "1e-3")})),
    "milestone range too narrow": Case(f"error: study.yaml: {SPACE}.milestones.count: 2 milestones cannot fall on "
                                       f"distinct iterations", learner_study(
                                           {"milestones": {"type": "milestones", "count": 2, "low": 0.5,
                                                           "high": 0.55}})),
    "fixed milestones on one iteration": Case(f"{FIXED}.milestones: milestones [0.5, 0.55] fall on the same "
                                              f"iteration of budget.iterations = 4",
                                              learner_study({"lr": LR}, fixed={"milestones": [0.5, 0.55]})),
    "milestone choices on one iteration": Case(f"error: study.yaml: {SPACE}.milestones.choices[1]: milestones",
                                               learner_study({"milestones": {"type": "milestones",
                                                                             "choices": [[0.5], [0.3, 0.35]]}})),
    "one-way episodes": Case("error: study.yaml: dataset: ways=1: an episode of one class has nothing to classify",
                             study_with("dataset", ways=1)),
    "--learners ''": Case("error: study.yaml: --learners: no learner named", args=cli("--learners", "")),
    "--learners ',,'": Case("error: study.yaml: --learners: no learner named", args=cli("--learners", ",,")),
    "--learners twice the same": Case("--learners: 'protonet' is named twice",
                                      args=cli("--learners", "protonet,protonet")),
    "--workers far above the cores": Case("error: study.yaml: search.workers: 1000 workers on ",
                                          args=cli("--workers", "1000", "--storage", "journal:///j.journal")),
    # ---- more shapes and types
    "zero test episodes": Case("error: study.yaml: test.episodes: Input should be greater than 0",
                               study_dict(test={"episodes": 0})),
    "zero training seeds": Case("error: study.yaml: test.seeds: Input should be greater than 0",
                                study_with("test", seeds=0)),
    "unknown CI method": Case("error: study.yaml: test.ci: Input should be 't', 'normal' or 'bootstrap'",
                              study_with("test", ci="wald")),
    "running batch norm for MAML": Case(
        "error: study.yaml: learners.maml.fixed.bn_at_test: bn_at_test must be batch: MAML and Reptile adapt",
        study_dict(learners={"maml": {"fixed": {"bn_at_test": "running"}, "space": {"lr": LR}}})),
    "unknown batch-norm mode": Case(
        f"error: study.yaml: {FIXED}.bn_at_test: bn_at_test must be one of running, batch, got 'episode'",
        learner_study({"lr": LR}, {"bn_at_test": "episode"})),
    "zero validation episodes": Case("budget.val_episodes: Input should be greater than 0",
                                     study_with("budget", val_episodes=0)),
    "patience below 1": Case("error: study.yaml: budget.early_stopping.patience: Input should be greater than 0",
                             study_with("budget", early_stopping={"patience": 0})),
    "patience below 1 in a learner's space": Case(
        f"error: study.yaml: {SPACE}.patience: patience must be at least 1, got 0",
        learner_study({"lr": LR, "patience": int_range(0, 5)})),
    "negative min_delta": Case("budget.early_stopping.min_delta: Input should be greater than or equal to 0",
                               study_with("budget", early_stopping={"patience": 3, "min_delta": -0.1})),
    "unknown model selection": Case("error: study.yaml: budget.select: Input should be 'last' or 'best'",
                                    study_with("budget", select="first")),
    "no model kept and none re-trained": Case(
        "error: study.yaml: checkpoints.keep: none keeps no model for the final test; set test.retrain: true",
        study_dict(checkpoints={"keep": "none"})),
    "zero heartbeat interval": Case("search.heartbeat_interval: Input should be greater than 0",
                                    study_with("search", heartbeat_interval=0)),
    "hyperband reduction factor of 1": Case(
        "error: study.yaml: search.pruner.reduction_factor: Input should be greater than or equal to 2",
        study_with("search", pruner={"type": "hyperband", "reduction_factor": 1})),
    "float workers": Case("search.workers: Input should be a valid integer", study_with("search", workers=1.5)),
    "storage not a string": Case("error: study.yaml: storage: Input should be a valid string", study_dict(storage=5)),
    "empty study name": Case("study.yaml: name: String should match pattern", study_dict(name="")),
    "space entry not a mapping": Case(f"error: study.yaml: {SPACE}.lr: ", learner_study({"lr": 0.01})),
    "fixed not a mapping": Case(f"error: study.yaml: {FIXED}: Input should be a valid dictionary",
                                learner_study({"lr": LR}, fixed=[1, 2])),
    "a number for a backbone": Case(f"error: study.yaml: {SPACE}.backbone.choices[0]: expected str, got 1",
                                    learner_study({"backbone": categorical(1, "conv4")})),
    "zero milestone count": Case(f"{SPACE}.milestones.count: Input should be greater than 0", learner_study(
        {"milestones": {"type": "milestones", "count": 0, "low": 0.2, "high": 0.8}})),
    "data root is a file": Case("error: study.yaml: dataset.root: no such directory",
                                study_with("dataset", root="data.txt"), files={"data.txt": "not data"}),
    # ---- optimisers, schedules, L1 and test heads
    "unknown optimizer": Case(f"{FIXED}.optimizer: optimizer must be one of adam, sgd, adamw, rmsprop, got 'lamb'",
                              learner_study({"lr": LR}, fixed={"optimizer": "lamb"})),
    "unknown optimizer among the choices": Case(f"error: study.yaml: {SPACE}.optimizer.choices[1]: optimizer must be",
                                                learner_study({"optimizer": categorical("sgd", "adagrad")})),
    "unknown scheduler": Case(f"{FIXED}.scheduler: scheduler must be one of multistep, step, exponential, cosine, "
                              f"plateau, got 'onecycle'", learner_study({"lr": LR}, fixed={"scheduler": "onecycle"})),
    "unknown scheduler among the choices": Case(f"{SPACE}.scheduler.choices[0]: scheduler must be one of",
                                                learner_study({"scheduler": categorical("linear", "cosine")})),
    "nesterov with adam": Case(f"{FIXED}.nesterov: nesterov needs optimizer sgd with a momentum above 0",
                               learner_study({"lr": LR}, fixed={"nesterov": True})),
    "nesterov without momentum": Case(f"{FIXED}.nesterov: nesterov needs optimizer sgd with a momentum above 0",
                                      learner_study({"lr": LR}, fixed={"optimizer": "sgd", "nesterov": True,
                                                                       "momentum": 0.0})),
    "nesterov not a boolean": Case(f"{FIXED}.nesterov: expected bool, got 'maybe'",
                                   learner_study({"lr": LR}, fixed={"optimizer": "sgd", "nesterov": "maybe"})),
    "three betas": Case(f"{FIXED}.betas: expected tuple[float, float]",
                        learner_study({"lr": LR}, fixed={"betas": [0.9, 0.99, 0.999]})),
    "a beta of 1": Case(f"{FIXED}.betas: betas must be two numbers in [0, 1), got [0.9, 1.0]",
                        learner_study({"lr": LR}, fixed={"betas": [0.9, 1.0]})),
    "a beta of 1 among the choices": Case(f"{SPACE}.betas.choices[1]: betas must be two numbers in [0, 1)",
                                          learner_study({"betas": categorical([0.9, 0.999], [1.0, 0.999])})),
    "negative eta_min": Case(f"{FIXED}.eta_min: eta_min must be at least 0, got -1e-05",
                             learner_study({"lr": LR}, fixed={"scheduler": "cosine", "eta_min": -1e-5})),
    "cosine to above lr": Case(f"{FIXED}: eta_min (0.01) must be below lr (0.001): cosine anneals down to it",
                               learner_study({"meta_batch": int_range(1, 2)},
                                             fixed={"scheduler": "cosine", "eta_min": 0.01, "lr": 0.001})),
    "step_size of 0": Case(f"{FIXED}.step_size: step_size must be a fraction of the budget in (0, 1], got 0.0",
                           learner_study({"lr": LR}, fixed={"scheduler": "step", "step_size": 0.0})),
    "step_size range above 1": Case(f"error: study.yaml: {SPACE}.step_size: step_size must be a fraction",
                                    learner_study({"step_size": {"type": "float", "low": 0.5, "high": 2.0}})),
    "plateau patience of 0": Case(f"{FIXED}.plateau_patience: plateau_patience must be at least 1, got 0",
                                  learner_study({"lr": LR}, fixed={"scheduler": "plateau", "plateau_patience": 0})),
    "warm-up of the whole budget": Case(f"{FIXED}.warmup: warmup must be a fraction of the budget in [0, 1), got 1.0",
                                        learner_study({"lr": LR}, fixed={"warmup": 1.0})),
    "milestones inside the warm-up": Case(f"{FIXED}: milestones ([0.1]) must come after the warm-up (0.2)",
                                          learner_study({"lr": LR}, fixed={"warmup": 0.2, "milestones": [0.1]})),
    "negative l1": Case(f"error: study.yaml: {FIXED}.l1: l1 must be at least 0, got -0.001",
                        learner_study({"lr": LR}, fixed={"l1": -0.001})),
    "l1 range below 0": Case(f"error: study.yaml: {SPACE}.l1: l1 must be at least 0",
                             learner_study({"l1": {"type": "float", "low": -0.1, "high": 0.1}})),
    "NaN l1": Case(f"{FIXED}.l1: l1 must be a finite number", learner_study({"lr": LR}, fixed={"l1": NAN})),
    "unknown test head": Case(f"{FIXED}.test_head: test_head must be one of centroid, logreg, got 'svm'",
                              learner_study({"lr": LR}, fixed={"test_head": "svm"})),
    "a test head for MAML": Case("error: study.yaml: learners.maml.fixed.test_head: unknown hyperparameter of maml",
                                 study_dict(learners={"maml": {"fixed": {"test_head": "logreg"},
                                                               "space": {"lr": LR}}})),
    "a test head for finetune": Case("learners.finetune.space.test_head: unknown hyperparameter of finetune",
                                     study_dict(learners={"finetune": {"space": {"test_head": categorical(
                                         "centroid", "logreg")}}})),
    # ---- conditional space entries
    "a condition on an unknown field": Case(f"error: study.yaml: {SPACE}.eta_min.when.schedular: unknown hyperparameter",
                                            learner_study({"scheduler": categorical("multistep", "cosine"),
                                                           "eta_min": {"type": "float", "low": 0.0, "high": 1e-4,
                                                                       "when": {"schedular": "cosine"}}})),
    "a condition that can never hold": Case(f"{SPACE}.eta_min.when.scheduler: can never hold: scheduler takes "
                                            f"multistep, plateau, never cosine",
                                            learner_study({"scheduler": categorical("multistep", "plateau"),
                                                           "eta_min": {"type": "float", "low": 0.0, "high": 1e-4,
                                                                       "when": {"scheduler": "cosine"}}})),
    "a conditional entry also fixed": Case(f"error: study.yaml: {SPACE}.eta_min: given in both fixed and space",
                                           learner_study({"scheduler": categorical("multistep", "cosine"),
                                                          "eta_min": {"type": "float", "low": 0.0, "high": 1e-4,
                                                                      "when": {"scheduler": "cosine"}}},
                                                         fixed={"eta_min": 1e-5})),
    "a condition on a fixed field": Case(f"{SPACE}.eta_min.when.scheduler: conditions name categorical entries of "
                                         f"the space; scheduler is fixed",
                                         learner_study({"eta_min": {"type": "float", "low": 0.0, "high": 1e-4,
                                                                    "when": {"scheduler": "cosine"}}},
                                                       fixed={"scheduler": "cosine"})),
    "a condition on a range": Case(f"{SPACE}.momentum.when.lr: conditions name categorical entries of the space; "
                                   f"lr is float", learner_study({"lr": LR, "momentum": {
                                       "type": "float", "low": 0.5, "high": 0.9, "when": {"lr": 0.01}}})),
    "conditions in a cycle": Case(f"error: study.yaml: {SPACE}.nesterov.when: the conditions form a cycle: "
                                  f"nesterov -> optimizer -> nesterov", learner_study({
                                      "optimizer": {**categorical("sgd", "adam"), "when": {"nesterov": True}},
                                      "nesterov": {**categorical(True, False), "when": {"optimizer": "sgd"}}})),
    "a grid with a conditional range": Case(f"error: study.yaml: {SPACE}.eta_min: a grid needs a float range with a "
                                            f"step", learner_study({"scheduler": categorical("multistep", "cosine"),
                                                                    "eta_min": {"type": "float", "low": 0.0,
                                                                                "high": 1e-4,
                                                                                "when": {"scheduler": "cosine"}}},
                                                                   search={"sampler": "grid", "n_trials": 4})),
    # ---- warm start
    "warm start from a missing database": Case("error: study.yaml: search.warm_start.storage: no database file",
                                               study_with("search", warm_start={"study": "before",
                                                                                "storage": "sqlite:///none.db"})),
    "warm start of a grid": Case("error: study.yaml: search: warm_start: a grid runs every point anyway",
                                 study_with("search", sampler="grid", warm_start={"study": "before"})),
    "warm start of no configuration": Case("search.warm_start.top_k: Input should be greater than 0",
                                           study_with("search", warm_start={"study": "before", "top_k": 0})),
    # ---- storages that are not what they claim
    "journal file is a folder": Case("error: study.yaml: storage: the journal file is a folder",
                                     args=cli("--storage", "journal:///j"), files={"j": None}),
    "journal in a missing folder": Case("study.yaml: storage: the folder of the journal file does not exist",
                                        args=cli("--storage", "journal:///no/such/j.journal")),
    "journal file that is no journal": Case("error: study.yaml: storage: not an Optuna journal file",
                                            args=cli("--storage", "journal:///j.journal"),
                                            files={"j.journal": "# my notes\n"}),
    "SQLite file that is no database": Case("error: study.yaml: storage: not a SQLite database",
                                            args=cli("--storage", "sqlite:///notes.db"), files={"notes.db": "notes"}),
    "tracking SQLite file that is no database": Case(
        "error: study.yaml: tracking_uri: not a SQLite database",
        args=cli("--tracking-uri", "sqlite:///notes.db"), files={"notes.db": "notes"}),
}


def write(path: Path, content: Content) -> None:
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))


def prepare(case: Case, directory: Path) -> list[str]:
    """Write the case's files; its command line."""
    if case.study is not None:
        write(directory / "study.yaml", case.study)
    for name, content in case.files.items():
        write(directory / name, content)
    return list(case.args)


def listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def check_one_line(case: Case, code: int, out: str, err: str) -> None:
    assert code == 2, (out, err)
    assert_one_error_line(err)
    assert err.startswith(case.expected) if case.expected.startswith("error: ") else case.expected in err, err
    assert ":pw@" not in err and "hunter2" not in err  # passwords never printed


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_naming_the_field(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = prepare(case, tmp_path)
    before = listing(tmp_path)
    try:
        code = main_in(tmp_path, *argv)
    except SystemExit as e:  # argparse stops by exiting
        code = e.code
    out, err = capsys.readouterr()
    check_one_line(case, code, out, err)
    assert listing(tmp_path) == before  # no storage, no MLflow database, no mlruns, no pwned file


@pytest.mark.parametrize("name", ["--n-trials abc", "unsafe YAML tag"])
def test_bad_input_in_a_real_process_prints_no_traceback(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    argv = prepare(case, tmp_path)
    before = listing(tmp_path)
    done = subprocess.run(hpo_command(*argv), cwd=tmp_path, env=environment(), capture_output=True, text=True,
                          timeout=120)
    check_one_line(case, done.returncode, done.stdout, done.stderr)
    assert listing(tmp_path) == before


class _Answer(http.server.BaseHTTPRequestHandler):
    """Answers every GET with ``status`` and ``body``: a service that is not MLflow."""

    status, body = 200, b"OK"

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:  # quiet
        pass


class _NotFound(_Answer):
    status, body = 404, b"<html>not found</html>"


class _Banner(socketserver.BaseRequestHandler):
    """Speaks another protocol: a banner line, then hangs up."""

    def handle(self) -> None:
        self.request.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")


SERVERS = {"answers OK to everything": (http.server.ThreadingHTTPServer, _Answer,
                                        "tracking_uri: http://127.0.0.1:{port} is not an MLflow server"),
           "answers 404 to everything": (http.server.ThreadingHTTPServer, _NotFound,
                                         "tracking_uri: http://127.0.0.1:{port} is not an MLflow server (its API "
                                         "answered HTTP 404)"),
           "speaks another protocol": (socketserver.ThreadingTCPServer, _Banner,
                                       "tracking_uri: http://127.0.0.1:{port} is not an MLflow server")}


@pytest.mark.parametrize("name", list(SERVERS))
def test_a_tracking_server_that_is_not_mlflow_is_bad_input(name: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    server_class, handler, expected = SERVERS[name]
    with server_class(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        case = Case(f"error: study.yaml: {expected.format(port=port)}",
                    args=cli("--tracking-uri", f"http://127.0.0.1:{port}"))
        argv = prepare(case, tmp_path)
        before = listing(tmp_path)
        code = main_in(tmp_path, *argv)
        server.shutdown()
    out, err = capsys.readouterr()
    check_one_line(case, code, out, err)
    assert listing(tmp_path) == before


def test_the_table_covers_enough_distinct_cases() -> None:
    assert len(CASES) >= 100 and len({(c.expected, str(c.study), c.args) for c in CASES.values()}) == len(CASES)
