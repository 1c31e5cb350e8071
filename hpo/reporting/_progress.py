"""Progress bars of a search (training and evaluation bars are the learners' own)."""
from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from hpo.storage import CappedStudy, counted_trials


class TrialsBar:
    """Progress over the study's total, from the study's state (trials of every worker count)."""

    def __init__(self, study: CappedStudy, progress: bool):
        # A grid's total is what it queued (all its points, or n_trials of them).
        total = study.planned_trials() if study.queued_only else study.total
        self.bar = tqdm(total=total, initial=counted_trials(study), desc=f"{study.study_name} trials",
                        unit="trial", position=0, leave=True, disable=not progress, dynamic_ncols=True)

    def update(self, study: optuna.Study, *_: Any) -> None:
        """Also an Optuna callback (``study, trial``)."""
        self.bar.n = counted_trials(study)
        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            self.bar.set_postfix(best=f"{study.best_value:.4f}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
