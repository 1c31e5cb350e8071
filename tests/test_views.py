"""The record as a user meets it, offline: the command's last lines say where to look, that link opens the
MLflow experiment on its runs, and every plot artifact draws without a network (headless Chromium)."""
from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from learners.data import load_dataset
from tests.helpers import (CHROMIUM, NO_CHROMIUM, LOG_LR, environment, free_port, main_in, mlflow_server, rendered,
                           study_dict, tracking, write_study)

LEARNERS = {"protonet": {"fixed": {"backbone": "conv4"}, "space": {"lr": LOG_LR, "meta_batch": {
    "type": "int", "low": 1, "high": 2}}},
            "maml": {"fixed": {"backbone": "conv4", "meta_batch": 2, "first_order": True},
                     "space": {"inner_lr": {"type": "float", "low": 0.05, "high": 0.5}, "lr": LOG_LR}}}


@pytest.fixture(scope="module")
def study_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A two-learner synthetic study, run; its folder and what the command printed."""
    directory = tmp_path_factory.mktemp("views")
    write_study(directory, study_dict(name="views", learners=LEARNERS,
                                      search={"sampler": "random", "n_trials": 3}))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main_in(directory, "study.yaml", "--no-progress") == 0
    return directory, out.getvalue()


def printed_runs_path(printed: str) -> str:
    """The path and fragment of the URL the command's last lines give (after the host)."""
    [url] = re.findall(r"then open http://127\.0\.0\.1:5000(\S+)", printed)
    return url


def test_the_last_lines_say_how_to_open_the_experiment_on_its_runs(study_run: tuple[Path, str]) -> None:
    directory, printed = study_run
    experiment = tracking(directory).get_experiment_by_name("views").experiment_id
    lines = printed.rstrip().splitlines()
    assert lines[-3] == f"MLflow: mlflow ui --backend-store-uri sqlite:///{directory}/mlflow.db"
    assert lines[-1].startswith(f"Optuna: optuna-dashboard sqlite:///{directory}/optuna.db ")
    assert printed_runs_path(printed) == f"/#/experiments/{experiment}/runs?workflowType=machine_learning"


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_printed_link_opens_the_runs_and_every_plot_draws_offline(study_run: tuple[Path, str]) -> None:
    directory, printed = study_run
    client = tracking(directory)
    experiment = client.get_experiment_by_name("views").experiment_id
    finals = client.search_runs([experiment], "tags.run_role = 'final_test'")
    parents = client.search_runs([experiment], "tags.run_role = 'parent'")
    with mlflow_server(f"sqlite:///{directory}/mlflow.db") as base:
        page = rendered(base + printed_runs_path(printed), expect="Run Name")
        parent_pages = [visible_text(rendered(f"{base}/#/experiments/{experiment}/runs/{p.info.run_id}",
                                              expect="test_accuracy")) for p in parents]
        ids, experiments = json.dumps([r.info.run_id for r in finals]), json.dumps([experiment])
        compared = visible_text(rendered(f"{base}/#/compare-runs?runs={quote(ids)}&experiments={quote(experiments)}",
                                         expect="test_accuracy"))
    text = visible_text(page)
    # The runs table of model training, not the GenAI overview ("Traces 0, No data available").
    assert "Run Name" in text and "No data available" not in text
    for learner in LEARNERS:  # each parent run's name, a link to its page
        assert re.search(rf'href="#/experiments/\d+/runs/[0-9a-f]{{32}}"><span[^>]*>{learner}</span></a>', page)
    # The Datasets column names the data, with its digest.
    train = load_dataset("synthetic").train
    assert f"synthetic/default/train ({train.digest})" in text
    # One parent per learner, whose page shows its test accuracy.
    assert sorted(p.info.run_name for p in parents) == sorted(LEARNERS)
    for parent, parent_page in zip(parents, parent_pages):
        assert f"test_accuracy {parent.data.metrics['test_accuracy']}"[:20] in parent_page  # the page shows it whole
    # Compare on the final-test runs: the learners' tuned values side by side, and their test accuracy.
    assert len(finals) == len(LEARNERS) and "test_accuracy" in compared
    for final in finals:
        assert f"{final.info.run_name} " in compared and all(
            final.data.params[name] in compared for name in LEARNERS[final.data.tags["learner"]]["space"])
    reports = list(directory.glob("mlruns/*/*/artifacts/plots/plots.html"))
    assert len(reports) == len(LEARNERS)
    for report in reports:
        figures, console = len(list(report.parent.glob("*.png"))), []
        drawn = rendered(report.as_uri(), offline=True, console=console)
        assert drawn.count('class="main-svg"') >= figures >= 3, report  # every plot drawn, with no network
        assert not [line for line in console if "Uncaught" in line or "rror" in line], console


def visible_text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style).*?</\1>", "", page, flags=re.S)))


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_optuna_dashboard_lists_the_studies_and_names_their_value(study_run: tuple[Path, str]) -> None:
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed (pip install -e '.[dashboard]')")
    directory, _ = study_run
    url = f"http://127.0.0.1:{(port := free_port())}"
    # Its console script, next to this interpreter (the package has no __main__).
    command = Path(sys.executable).parent / "optuna-dashboard"
    dashboard = subprocess.Popen([str(command), f"sqlite:///{directory}/optuna.db", "--host", "127.0.0.1",
                                  "--port", str(port)], env=environment(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/studies", timeout=2).close()
                break
            except OSError:
                assert dashboard.poll() is None and time.monotonic() < deadline, "optuna-dashboard did not start"
                time.sleep(0.5)
        listing = visible_text(rendered(f"{url}/dashboard", expect="views/"))
        assert all(f"views/{learner}" in listing for learner in LEARNERS)
        history = rendered(f"{url}/dashboard/studies/1", expect="main-svg")
        assert "val_accuracy" in visible_text(history) and 'class="main-svg"' in history  # the value's name, drawn
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
