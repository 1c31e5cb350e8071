"""Optuna's plots of a learner's study, as files to log with its parent run, viewable offline.

Two forms of the same plots, made once per learner when its study ends:

* PNG images from Optuna's matplotlib backend, which MLflow's artifact view shows inline;
* one interactive HTML report (``plots.html``) holding every plot, with plotly.js included once, so it
  opens without a network (loading plotly.js from its CDN left the plots blank offline).

Plots: the optimisation history, each trial's validation curve (its intermediate values), the
parallel coordinates and, with two complete trials and two parameters, the parameter importances.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from hpo.logs import experimental_api

log = logging.getLogger(__name__)

PLOTS_FOLDER = "plots"  # in the parent run's artifacts
REPORT = "plots.html"
PNG_DPI = 100  # 640x480 px figures: a few tens of kB each


def write_plots(study: optuna.Study, directory: Path) -> list[Path]:
    """The PNG of each plot and the HTML report, written in ``directory``; none before a trial completes."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot
    from optuna import visualization
    from optuna.visualization import matplotlib as static

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    plots: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
        "optimization_history": (visualization.plot_optimization_history, static.plot_optimization_history),
        "validation_curves": (visualization.plot_intermediate_values, static.plot_intermediate_values),
        "parallel_coordinate": (visualization.plot_parallel_coordinate, static.plot_parallel_coordinate),
    }
    if len(complete) >= 2 and len({name for t in complete for name in t.params}) >= 2:
        plots["param_importances"] = (visualization.plot_param_importances, static.plot_param_importances)
    paths, sections = [], []
    with experimental_api(), warnings.catch_warnings():  # the matplotlib backend is experimental in Optuna 5
        warnings.simplefilter("ignore", UserWarning)  # matplotlib's axis notes ("identical low and high ylims")
        for name, (interactive, image) in plots.items():
            try:
                figure, axes = interactive(study), image(study)
            except (ValueError, RuntimeError) as e:  # e.g. importances of parameters that never varied
                log.warning("skipped the %s plot of %s: %s", name, study.study_name, e)
                continue
            if name == "validation_curves":  # Optuna says "Intermediate Value" and "Step"
                figure.update_layout(xaxis_title="training step", yaxis_title="val_accuracy")
                axes.set_xlabel("training step")
                axes.set_ylabel("val_accuracy")
            path = directory / f"{name}.png"
            axes_figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            axes_figure.savefig(path, dpi=PNG_DPI, bbox_inches="tight")
            pyplot.close(axes_figure)
            paths.append(path)
            # plotly.js once, in the first plot; the others use it.
            sections.append(figure.to_html(full_html=False, include_plotlyjs=not sections))
    if sections:
        report = directory / REPORT
        report.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{study.study_name}</title>"
                          f"</head><body><h1>{study.study_name}</h1>{''.join(sections)}</body></html>")
        paths.append(report)
    return paths
