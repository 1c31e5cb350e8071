"""Optuna's plots of a learner's study, as files to log with its parent run."""
from __future__ import annotations

import logging
from pathlib import Path

import optuna
from optuna.trial import TrialState

log = logging.getLogger(__name__)


def write_plots(study: optuna.Study, directory: Path) -> list[Path]:
    """Optimisation history, parallel coordinates and (with ≥2 complete trials and ≥2 parameters)
    parameter importances, as plotly HTML files that load plotly.js from its CDN (a few kB each)."""
    from optuna import visualization

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    plots = {"optimization_history": visualization.plot_optimization_history,
             "parallel_coordinate": visualization.plot_parallel_coordinate}
    if len(complete) >= 2 and len({name for t in complete for name in t.params}) >= 2:
        plots["param_importances"] = visualization.plot_param_importances
    paths = []
    for name, plot in plots.items():
        try:
            figure = plot(study)
        except (ValueError, RuntimeError) as e:  # e.g. importances of parameters that never varied
            log.warning("skipped the %s plot of %s: %s", name, study.study_name, e)
            continue
        path = directory / f"{name}.html"
        figure.write_html(path, include_plotlyjs="cdn")
        paths.append(path)
    return paths
