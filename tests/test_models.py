"""Tested models in MLflow: one registered version per learner, loaded in a fresh process to the same test
accuracy; ``hpo.evaluate`` on the registry, on a dataset and on a folder of the user's own episodes;
``hpo.predict`` on unlabelled images; their bad input; the MLflow UI showing the models (headless Chromium)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml
from PIL import Image

from hpo.evaluate import main as evaluate_main
from hpo.predict import main as predict_main
from learners.checkpoint import SavedModel
from learners.data import Episodes, ImageSplit, load_dataset
from learners.registry import LEARNERS
from tests.helpers import (CHROMIUM, NO_CHROMIUM, REPO, assert_one_error_line, environment, main_in, mlflow_server,
                           rendered, tracking, write_study)

STUDY = "qs"
TEST_EPISODES = 20


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quickstart's study (every learner, its spaces and sampler) on synthetic data with a tiny budget, run."""
    directory = tmp_path_factory.mktemp("models")
    study = yaml.safe_load((REPO / "studies" / "quickstart.yaml").read_text())
    study.update(name=STUDY, device="cpu", dataset={"name": "synthetic", "ways": 5, "shots": 1, "queries": 5},
                 budget={"iterations": 4, "val_interval": 2, "val_episodes": 4}, test={"episodes": TEST_EPISODES})
    study["search"]["n_trials"] = 2
    write_study(directory, study)
    assert main_in(directory, "study.yaml", "--no-progress") == 0
    return directory


def run_python(directory: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=directory, env=environment(), capture_output=True, text=True,
                          timeout=300)


def model_uri(learner: str, version: int = 1) -> str:
    return f"models:/{STUDY}.{learner}/{version}"


def test_a_study_registers_one_tagged_version_per_learner_linked_to_its_parent_run(study_dir: Path) -> None:
    client = tracking(study_dir)
    for learner in LEARNERS:
        [version] = client.search_model_versions(f"name = '{STUDY}.{learner}'")
        parent = _parent(study_dir, learner)
        assert version.run_id == parent.info.run_id
        assert parent.data.tags["registered_model"] == model_uri(learner)
        tags = version.tags
        assert tags["study"] == f"{STUDY}/{learner}" and tags["trial"] == parent.data.tags["tested_trial"]
        accuracy, ci95 = parent.data.metrics["test_accuracy"], parent.data.metrics["test_ci95"]
        assert tags["test_accuracy"] == f"{100 * accuracy:.2f}% ± {100 * ci95:.2f}%"
        assert tags["protocol"].startswith(f"5-way 1-shot 5-query, {TEST_EPISODES} fixed test episodes of seed 0")
        # The logged model: an output of the parent run, with the test metrics linked to it.
        [output] = parent.outputs.model_outputs
        logged = client.get_logged_model(output.model_id)
        assert version.source == f"models:/{logged.model_id}" and logged.source_run_id == parent.info.run_id
        linked = {m.key: m.value for m in logged.metrics}
        assert linked["test_accuracy"] == accuracy and linked["test_ci95"] == ci95


def _parent(study_dir: Path, learner: str) -> Any:
    client = tracking(study_dir)
    experiment = client.get_experiment_by_name(STUDY)
    [parent] = client.search_runs([experiment.experiment_id],
                                  f"tags.run_role = 'parent' and tags.optuna_study = '{STUDY}/{learner}'")
    return parent


FRESH_PROCESS = """
import json, sys
import mlflow
from learners.base import evaluation_seed
from learners.statistics import mean_interval
from learners.data import load_dataset
mlflow.set_tracking_uri("sqlite:///mlflow.db")
test = load_dataset("synthetic").test
scores = {}
for learner in sys.argv[1:]:
    model = mlflow.pyfunc.load_model(f"models:/qs.{learner}/1")
    assert model.metadata.signature.inputs.input_names() == ["support", "support_labels", "query"]
    few_shot = model.unwrap_python_model()
    interval = mean_interval(few_shot.learner.evaluate(test, %d, evaluation_seed(0, "test")), "t")
    scores[learner] = (interval.mean, interval.half_width)
print(json.dumps(scores))
""" % TEST_EPISODES


def test_each_version_loads_in_a_fresh_process_and_scores_the_test_episodes_exactly(study_dir: Path) -> None:
    done = run_python(study_dir, "-c", FRESH_PROCESS, *LEARNERS)
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    for learner in LEARNERS:
        parent = _parent(study_dir, learner)
        assert tuple(scores[learner]) == (parent.data.metrics["test_accuracy"], parent.data.metrics["test_ci95"])


@pytest.mark.parametrize("learner", ["protonet", "maml"])
def test_evaluate_on_the_registry_reproduces_the_parent_runs_test_accuracy(study_dir: Path, learner: str) -> None:
    done = run_python(study_dir, "-m", "hpo.evaluate", model_uri(learner), "--episodes", str(TEST_EPISODES), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    parent = _parent(study_dir, learner)
    assert (report["accuracy"], report["ci95"]) == (parent.data.metrics["test_accuracy"],
                                                    parent.data.metrics["test_ci95"])
    assert len(report["per_episode"]) == TEST_EPISODES
    assert report["protocol"] == {"dataset": "synthetic", "split": "default", "part": "test", "ways": 5, "shots": 1,
                                  "queries": 5, "episodes": TEST_EPISODES, "episode_seed": 2000,
                                  "ci": "95% CI, Student's t with n-1 degrees of freedom",
                                  "bn_at_test": "batch" if learner == "maml" else "running"}


INPUT_EXAMPLE = """
import json, mlflow
from mlflow.models import Model
mlflow.set_tracking_uri("sqlite:///mlflow.db")
path = mlflow.artifacts.download_artifacts("models:/qs.protonet/1")
example = Model.load(path).load_input_example(path)
probabilities = mlflow.pyfunc.load_model(path).predict(example)
print(json.dumps([list(probabilities.shape), str(probabilities.dtype), probabilities.sum(-1).tolist()]))
"""


def test_every_form_of_model_argument_names_the_same_model(study_dir: Path, capsys: pytest.CaptureFixture) -> None:
    client = tracking(study_dir)
    client.set_registered_model_alias(f"{STUDY}.protonet", "champion", "1")
    parent = _parent(study_dir, "protonet")
    trial_run = parent.data.tags["tested_model_run"]
    forms = [model_uri("protonet"), f"models:/{STUDY}.protonet@champion",
             f"models:/{parent.outputs.model_outputs[0].model_id}", parent.info.run_id, trial_run,
             f"runs:/{trial_run}/model.pt", str(kept_model_file(study_dir, "protonet"))]
    accuracies = []
    for form in forms:
        assert evaluate_main([form, "--tracking-uri", f"sqlite:///{study_dir}/mlflow.db", "--episodes",
                              str(TEST_EPISODES), "--json"]) == 0, form
        accuracies.append(json.loads(capsys.readouterr().out)["accuracy"])
    assert accuracies == [parent.data.metrics["test_accuracy"]] * len(forms)


def test_the_pyfunc_model_classifies_its_input_example(study_dir: Path) -> None:
    done = run_python(study_dir, "-c", INPUT_EXAMPLE)
    assert done.returncode == 0, done.stderr
    shape, dtype, sums = json.loads(done.stdout)
    assert shape == [5, 5] and dtype == "float32" and all(abs(s - 1) < 1e-5 for s in sums)


# --------------------------------------------------------------------------- the user's own images

def save_png(pixels: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[0].numpy()).save(path)


# (ways, shots, queries) of each generated episode: they differ, as a user's may.
FOLDER_EPISODES = [(5, 1, 3), (3, 2, 2), (4, 5, 1)]


def write_episode_folder(folder: Path, split: ImageSplit) -> list[tuple[torch.Tensor, ...]]:
    """PNGs of test-split images in the episode-folder layout; each episode's tensors, as the Python API takes
    them (support, support labels, query, query labels)."""
    episodes = []
    for e, (ways, shots, queries) in enumerate(FOLDER_EPISODES):
        tensors: list[list[torch.Tensor]] = [[], [], [], []]
        for way in range(ways):
            cls = 5 * e + way
            start = int(split.class_start[cls])
            for k in range(shots + queries):
                part = "support" if k < shots else "query"
                save_png(split.images[start + k], folder / f"episode{e}" / part / f"class{cls:02d}" / f"{k}.png")
                tensors[0 if k < shots else 2].append(split.images[start + k])
                tensors[1 if k < shots else 3].append(torch.tensor(way))
        episodes.append(tuple(torch.stack(t) for t in tensors))
    return episodes


def api_accuracy(model: SavedModel, support, support_labels, query, query_labels) -> float:
    """The accuracy the Python API gives: the learner's classify on an episode of the images' tensors."""
    learner = model.build()
    pre = model.trained_on.preprocessing
    episode = Episodes(pre.normalise(support)[None], support_labels[None], pre.normalise(query)[None],
                       query_labels[None])
    predicted = learner.classify(episode, int(support_labels.max()) + 1).argmax(-1)
    return float((predicted == query_labels).double().mean())


def kept_model_file(study_dir: Path, learner: str) -> Path:
    """The model.pt the best trial of ``learner`` kept (a file, as a user may copy it)."""
    run_id = _parent(study_dir, learner).data.tags["tested_model_run"]
    [path] = study_dir.glob(f"mlruns/*/{run_id}/artifacts/model.pt")
    return path


def test_evaluate_on_an_episode_folder_equals_the_python_api(study_dir: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    episodes = write_episode_folder(tmp_path / "episodes", load_dataset("synthetic").test)
    path = kept_model_file(study_dir, "protonet")
    assert evaluate_main([str(path), "--episodes-dir", str(tmp_path / "episodes"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    from learners.checkpoint import load_model
    model = load_model(path)
    expected = [api_accuracy(model, *episode) for episode in episodes]
    assert [e["accuracy"] for e in report["per_episode"]] == expected
    assert [(e["ways"], e["support"], e["query"]) for e in report["per_episode"]] == [
        (w, w * s, w * q) for w, s, q in FOLDER_EPISODES]
    assert report["accuracy"] == pytest.approx(sum(expected) / len(expected))
    assert report["error_rate"] == pytest.approx(1 - report["accuracy"])
    # The text output: a line per episode, then the mean ± CI and the error rate.
    assert evaluate_main([str(path), "--episodes-dir", str(tmp_path / "episodes")]) == 0
    text = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in text[2:5]] == ["episode0", "episode1", "episode2"]
    assert text[-1].startswith(f"accuracy {100 * report['accuracy']:.2f}% ± ") and "error rate" in text[-1]


def test_predict_classifies_unlabelled_images_against_a_support_folder(study_dir: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    split = load_dataset("synthetic").test
    support, images = [], []
    for cls in range(4):
        start = int(split.class_start[cls])
        for k in range(2):
            save_png(split.images[start + k], tmp_path / "support" / f"class{cls}" / f"{k}.png")
            support.append((split.images[start + k], cls))
        save_png(split.images[start + 5], tmp_path / "unlabelled" / f"image{cls}.png")
        images.append(split.images[start + 5])
    out = tmp_path / "predictions.csv"
    assert predict_main([model_uri("protonet"), "--tracking-uri", f"sqlite:///{study_dir}/mlflow.db",
                         "--support", str(tmp_path / "support"), "--images", str(tmp_path / "unlabelled"),
                         "--csv", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["image"]).name for r in rows] == [f"image{c}.png" for c in range(4)]
    assert len(printed) == 1 + len(rows)
    from learners.checkpoint import load_model
    from learners.inference import probabilities
    model = load_model(kept_model_file(study_dir, "protonet"))
    expected = probabilities(model.build(), model.trained_on.preprocessing, torch.stack([s for s, _ in support]),
                             torch.tensor([c for _, c in support]), torch.stack(images), 4)
    for row, probs in zip(rows, expected):
        best, runner_up = probs.topk(2).indices.tolist()
        assert (row["predicted"], row["runner_up"]) == (f"class{best}", f"class{runner_up}")
        assert float(row["probability"]) == pytest.approx(float(probs[best]), abs=1e-4)
        assert float(row["probability"]) >= float(row["runner_up_probability"])


def test_a_learner_that_compares_embeddings_takes_any_ways_and_a_fixed_head_refuses_others(study_dir: Path) -> None:
    from learners.checkpoint import load_model
    from learners.data import DataError, TaskSpec
    protonet = load_model(kept_model_file(study_dir, "protonet")).build(spec=TaskSpec(3, 4, 2))
    assert protonet.spec == TaskSpec(3, 4, 2)
    maml = load_model(kept_model_file(study_dir, "maml"))
    with pytest.raises(DataError, match="MAML has a head of 5 ways and classifies 5-way episodes only, not 3-way"):
        maml.build(spec=TaskSpec(3, 1, 5))


# --------------------------------------------------------------------------- bad input

def corrupt_png(folder: Path) -> Path:
    """A file named like a PNG that is not one to the end."""
    path = folder / "broken.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return path


def lab_tiff(folder: Path) -> Path:
    """A 3-channel CIELAB image: PIL reads it but converts it neither to grayscale nor to RGB."""
    path = folder / "lab.tif"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("LAB", (28, 28)).save(path)
    return path


def episode_folder(root: Path, ways: int = 3, broken: Callable[[Path], Path] | None = None,
                   query_only: bool = False) -> Path:
    """A folder of one episode of ``ways`` test-split classes, one support and one query image each; ``broken``
    adds a bad image to the first query class, ``query_only`` a query class without support."""
    split = load_dataset("synthetic").test
    for way in range(ways):
        start = int(split.class_start[way])
        save_png(split.images[start], root / "e0" / "support" / f"c{way}" / "0.png")
        save_png(split.images[start + 1], root / "e0" / "query" / f"c{way}" / "0.png")
    if query_only:
        save_png(split.images[0], root / "e0" / "query" / "stranger" / "0.png")
    if broken is not None:
        broken(root / "e0" / "query" / "c0")
    return root


def old_format(path: Path) -> Path:
    torch.save({"format": 1, "kind": "model"}, path)
    return path


# (id, command, arguments given the study folder and a scratch folder, what the error line says)
BAD_INPUTS = [
    ("unknown-model", "evaluate", lambda s, t: [model_uri("nope")], "no model models:/qs.nope/1"),
    ("unknown-version", "evaluate", lambda s, t: [model_uri("protonet", 9)], "no model models:/qs.protonet/9"),
    ("unreachable-server", "evaluate", lambda s, t: [model_uri("protonet"), "--tracking-uri",
                                                     "http://hpo:s3cret@127.0.0.1:9"], "does not answer"),
    ("no-tracking-database", "evaluate", lambda s, t: [model_uri("protonet"), "--tracking-uri",
                                                       f"sqlite:///{t}/absent.db"], "--tracking-uri: no database file"),
    ("unknown-format", "evaluate", lambda s, t: [str(old_format(t / "old.pt"))], "not a checkpoint of this version"),
    ("not-a-checkpoint", "evaluate", lambda s, t: [str(_text_file(t / "notes.pt"))], "cannot read the checkpoint"),
    ("missing-file", "evaluate", lambda s, t: [str(t / "absent.pt")], "no checkpoint at"),
    ("empty-episode-folder", "evaluate", lambda s, t: [model_uri("protonet"), "--episodes-dir",
                                                       str(_mkdir(t / "empty"))], "has no episodes"),
    ("query-class-without-support", "evaluate",
     lambda s, t: [model_uri("protonet"), "--episodes-dir", str(episode_folder(t / "eps", query_only=True))],
     "has no support class"),
    ("corrupt-image", "evaluate",
     lambda s, t: [model_uri("protonet"), "--episodes-dir", str(episode_folder(t / "eps", broken=corrupt_png))],
     "cannot read image"),
    ("unconvertible-channels", "evaluate",
     lambda s, t: [model_uri("protonet"), "--episodes-dir", str(episode_folder(t / "eps", broken=lab_tiff))],
     "cannot convert image"),
    ("maml-ways-mismatch-folder", "evaluate",
     lambda s, t: [model_uri("maml"), "--episodes-dir", str(episode_folder(t / "eps", ways=3))],
     "MAML has a head of 5 ways"),
    ("reptile-ways-mismatch-dataset", "evaluate", lambda s, t: [model_uri("reptile"), "--ways", "3"],
     "Reptile has a head of 5 ways"),
    ("zero-episodes", "evaluate", lambda s, t: [model_uri("protonet"), "--episodes", "0"],
     "argument --episodes: must be at least 1, got 0"),
    ("impossible-ways", "evaluate", lambda s, t: [model_uri("protonet"), "--ways", "50"],
     "ways=50 is more than the 20 classes"),
    ("predict-missing-support", "predict", lambda s, t: [model_uri("protonet"), "--support", str(t / "absent"),
                                                          "--images", str(t)], "no folder"),
    ("predict-corrupt-image", "predict",
     lambda s, t: [model_uri("protonet"), "--support", str(episode_folder(t / "eps") / "e0" / "support"),
                   "--images", str(corrupt_png(t)), "--csv", str(t / "out.csv")], "cannot read image"),
    ("predict-maml-ways-mismatch", "predict",
     lambda s, t: [model_uri("maml"), "--support", str(episode_folder(t / "eps", ways=3) / "e0" / "support"),
                   "--images", str(t / "eps" / "e0" / "query" / "c0"), "--csv", str(t / "out.csv")],
     "MAML has a head of 5 ways"),
]


def _text_file(path: Path) -> Path:
    path.write_text("not a checkpoint")
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize("command, arguments, says", [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_error_line_exit_2_and_writes_nothing(study_dir: Path, tmp_path: Path, command: str,
                                                                arguments: Any, says: str) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    args = arguments(study_dir, scratch)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")), sorted(study_dir.iterdir())
    done = run_python(study_dir, "-m", f"hpo.{command}", *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert_one_error_line(done.stderr)
    assert says in done.stderr
    assert "s3cret" not in done.stderr
    # Nothing written: no CSV, no database, no downloaded files.
    assert (sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")), sorted(study_dir.iterdir())) == before


# --------------------------------------------------------------------------- the MLflow UI

@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_mlflow_ui_shows_each_model_in_its_runs_models_column_and_on_the_models_page(study_dir: Path) -> None:
    with mlflow_server(f"sqlite:///{study_dir}/mlflow.db") as base:
        experiment = tracking(study_dir).get_experiment_by_name(STUDY).experiment_id
        runs_page = rendered(f"{base}/#/experiments/{experiment}/runs", expect=">Models<")
        assert ">Models<" in runs_page  # the runs table's column
        models_page = rendered(f"{base}/#/models", expect=f"{STUDY}.")
        for learner in LEARNERS:
            model_id = _parent(study_dir, learner).outputs.model_outputs[0].model_id
            # The parent run's Models cell links its logged model, named after the learner.
            assert f'href="#/experiments/{experiment}/models/{model_id}" target="_blank">{learner}</a>' in runs_page
            assert f"{STUDY}.{learner}" in models_page
        run_page = rendered(f"{base}/#/experiments/{experiment}/runs/{_parent(study_dir, 'protonet').info.run_id}",
                            expect="Registered models")
        assert "Registered models" in run_page and f"models/{STUDY}.protonet/versions/1" in run_page
