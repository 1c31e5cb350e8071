"""Final-test seconds against one trial's seconds, per learner, of a study that has run.

    python -m hpo.run studies/quickstart.yaml && python benchmarks/final_test_share.py studies/quickstart.yaml

Reads the study's Optuna storage (``storage`` of the study file): each complete trial's wall time
(its ``timing.trial_s``) and the final test's ``seconds`` (loading the kept model and scoring the
test episodes, or re-training first with ``test.retrain: true``).
"""
from __future__ import annotations

import argparse
import statistics

import optuna
from optuna.trial import TrialState

from hpo.config import load_config
from hpo.execution._search import study_name
from hpo.storage import get_storage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="the study file the study ran with")
    config = load_config(parser.parse_args().study)
    storage = get_storage(config.storage)
    print(f"{'learner':<20} {'trial s (mean)':>14} {'final test s':>12} {'share':>7}  how")
    for learner in config.learners:
        study = optuna.load_study(study_name=study_name(config, learner), storage=storage)
        seconds = [t.user_attrs["timing"]["trial_s"] for t in study.get_trials(states=(TrialState.COMPLETE,))]
        test = study.user_attrs.get("final_test")
        if not seconds or test is None:
            print(f"{learner:<20} not run yet")
            continue
        trial = statistics.mean(seconds)
        print(f"{learner:<20} {trial:>14.1f} {test['seconds']:>12.2f} {test['seconds'] / trial:>7.1%}  {test['how']}")


if __name__ == "__main__":
    main()
