"""The one-off training command: JSON output, human output, hyperparameter parsing, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from learners.experiment import default_root
from learners.train import main, parse_overrides, parse_value
from tests.helpers import REPO, assert_one_error_line
TINY = ["--dataset", "synthetic", "--ways", "3", "--shots", "1", "--queries", "2", "--iterations", "3",
        "--val-interval", "2", "--val-episodes", "4", "--test-episodes", "8", "--device", "cpu"]


def test_json_output_has_results_and_settings(capsys):
    assert main(["--learner", "classifier_baseline", *TINY, "--set", "batch_size=16", "--set", "lr=0.002",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["learner"] == "classifier_baseline" and out["ways"] == 3
    assert 0.0 <= out["test_accuracy"] <= 1.0 and out["test_ci95"] > 0
    assert out["hparams"]["batch_size"] == 16 and out["hparams"]["lr"] == 0.002
    assert out["bn_at_test"] == "running" and out["seconds"] > 0
    assert [point["step"] for point in out["history"]] == [2, 3]


def test_text_output_reports_accuracy_batch_norm_and_time(capsys):
    assert main(["--learner", "protonet", *TINY, "--backbone", "conv4"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy:" in out and "95% CI, t, over 8 episodes" in out
    assert "batch norm at test: running" in out and "wall time:" in out


def test_module_prints_exactly_one_json_object_on_stdout():
    done = subprocess.run([sys.executable, "-m", "learners.train", "--learner", "meta_baseline", *TINY,
                           "--set", "batch_size=8", "--json"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and json.loads(done.stdout)["learner"] == "meta_baseline"
    assert "train MetaBaseline" in done.stderr and "test MetaBaseline" in done.stderr  # progress bars: stderr


@pytest.mark.parametrize("args, message", [
    (["--learner", "nope"], "invalid choice: 'nope'"),
    (["--learner", "protonet", "--dataset", "nope"], "invalid choice: 'nope'"),
    (["--learner", "protonet", "--backbone", "vgg"], "unknown backbone 'vgg'"),
    (["--learner", "protonet", "--ways", "30"], "ways=30"),
    (["--learner", "protonet", "--ways", "0"], "ways must be at least 1"),
    (["--learner", "protonet", "--iterations", "0"], "iterations must be at least 1"),
    (["--learner", "protonet", "--set", "bogus=1"], "unknown hyperparameter 'bogus'"),
    (["--learner", "protonet", "--set", "lr=fast"], "--set lr: expected float, got 'fast'"),
    (["--learner", "protonet", "--set", "lr=-1"], "lr must be positive"),
    (["--learner", "protonet", "--set", "lr"], "--set expects key=value"),
    (["--learner", "protonet", "--root", "/no/such/folder"], "data root '/no/such/folder' does not exist"),
    (["--learner", "protonet", "--seed", str(10**25)], "seed must be between 0 and 4294967295, got 1000"),
    (["--learner", "protonet", "--seed", "-1"], "seed must be between 0 and 4294967295, got -1"),
    (["--learner", "protonet", "--ways", "1"], "ways=1: an episode of one class has nothing to classify"),
    (["--learner", "protonet", "--set", "train_ways=100"], "training episodes 100-way 1-shot 15-query "
                                                           "(train_ways=100): ways=100 is more than the 64 classes"),
    (["--learner", "protonet", "--set", "train_queries=30"], "(train_queries=30): shots+queries=31 is more than"),
    (["--learner", "maml", "--set", "train_shots=10"], "(train_shots=10): shots+queries=25 is more than the 20"),
    (["--learner", "protonet", "--set", "lr=nan"], "lr must be a finite number, got nan"),
    (["--learner", "protonet", "--set", "lr=inf"], "lr must be a finite number, got inf"),
    (["--learner", "protonet", "--set", "momentum=1.5"], "momentum must be in [0, 1), got 1.5"),
    (["--learner", "protonet", "--set", "weight_decay=-1"], "weight_decay must be at least 0, got -1.0"),
    (["--learner", "protonet", "--set", "gamma=0"], "gamma must be positive"),
    (["--learner", "protonet", "--set", "milestones=0.5,1.5"], "milestones must be fractions"),
    (["--learner", "protonet", "--set", "train_ways=many"], "--set train_ways: expected int | None, got 'many'"),
    (["--learner", "protonet", "--set", "optimizer=lamb"], "optimizer must be one of adam, sgd, adamw, rmsprop, got 'lamb'"),
    (["--learner", "protonet", "--dataset", "miniimagenet"], "no miniimagenet data in"),  # not "split 'vinyals'"
])
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)  # where any file it wrote would land
    defaults = ["--dataset", "synthetic", "--iterations", "1", "--device", "cpu"]
    assert main(defaults + args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_error_line(captured.err)
    assert message in captured.err and "vinyals" not in captured.err
    assert list(tmp_path.iterdir()) == []


def test_hyperparameter_values_are_parsed_to_the_field_type():
    assert parse_overrides("protonet", ["milestones=0.3,0.6", "train_ways=20", "meta_batch=4", "optimizer=sgd"]) \
        == {"milestones": (0.3, 0.6), "train_ways": 20, "meta_batch": 4, "optimizer": "sgd"}
    assert parse_overrides("protonet", ["train_ways=none"]) == {"train_ways": None}
    assert parse_value("false", bool) is False


def test_default_root_prefers_the_shared_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_root("omniglot") == Path("data", "omniglot")
    (tmp_path / "work").mkdir()
    (tmp_path / "shared" / "data" / "omniglot").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    assert default_root("omniglot") == Path("..", "shared", "data", "omniglot")
