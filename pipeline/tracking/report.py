"""What a study leaves on its MLflow parent run: study plots, the trials table, best params, confusion matrix."""

from __future__ import annotations

import logging
import warnings

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt
import optuna
import optuna.visualization as plotly_plots
import optuna.visualization.matplotlib as png_plots
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from pipeline.search.study import best_trial
from pipeline.tracking.tracker import RUN_ID_ATTR, Tracker
from pipeline.training.metrics import OBJECTIVE, Scored

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"
TRIALS_TABLE = "trials.csv"
BEST_PARAMS = "best_params.json"
CONFUSION_MATRIX = "confusion_matrix.png"

# Artifact name -> optuna.visualization function name; each is drawn twice: Plotly HTML and matplotlib PNG.
PLOTS = {
    "optimization_history": "plot_optimization_history",
    "param_importances": "plot_param_importances",
    "parallel_coordinate": "plot_parallel_coordinate",
    "intermediate_values": "plot_intermediate_values",
}


def log_study(tracker: Tracker, run_id: str, study: optuna.Study) -> list[str]:
    """Plots, trials table and best params of `study`, as artifacts of `run_id`; returns the plots made."""
    made = []
    for name, function in PLOTS.items():
        reason = _cannot_plot(name, study)
        if reason:
            log.info("report: no %s plot: %s", name, reason)
            continue
        tracker.client.log_figure(run_id, _draw(plotly_plots, function, study), f"{PLOTS_DIR}/{name}.html")
        figure = _draw(png_plots, function, study).figure
        tracker.client.log_figure(run_id, figure, f"{PLOTS_DIR}/{name}.png")
        plt.close(figure)
        made.append(name)
    tracker.client.log_text(run_id, trials_table(study), TRIALS_TABLE)
    if study.get_trials(deepcopy=False, states=[TrialState.COMPLETE]):
        best = best_trial(study)
        tracker.client.log_dict(
            run_id, {"trial": best.number, OBJECTIVE: best.value, "params": best.params}, BEST_PARAMS
        )
    return made


def _draw(module, function: str, study: optuna.Study):
    with warnings.catch_warnings():  # the matplotlib backend is flagged experimental on every call
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if function == "plot_intermediate_values":  # its values are per-epoch accuracies already
            return getattr(module, function)(study)
        return getattr(module, function)(study, target_name=OBJECTIVE)


def _cannot_plot(name: str, study: optuna.Study) -> str | None:
    """Why a plot would be empty or fail on this study, or None."""
    complete = study.get_trials(deepcopy=False, states=[TrialState.COMPLETE])
    if not complete:
        return "no completed trial"
    if name == "param_importances":
        if len(complete) < 2:
            return f"needs 2 completed trials, the study has {len(complete)}"
        if len({t.value for t in complete}) < 2:
            return "every completed trial has the same value"
    if name == "intermediate_values" and not any(t.intermediate_values for t in study.trials):
        return "no trial reported per-epoch values"
    return None


def trials_table(study: optuna.Study) -> str:
    """CSV, one row per trial: number, state, params, value, mlflow_run_id (and the failure reason, if any)."""
    frame = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs", "duration"))
    frame = frame.rename(columns=lambda c: c.removeprefix("user_attrs_").removeprefix("params_"))
    if RUN_ID_ATTR not in frame:
        frame[RUN_ID_ATTR] = None
    first = ["number", "state", "value", *sorted({k for t in study.trials for k in t.params}), RUN_ID_ATTR]
    return frame[first + [c for c in frame.columns if c not in first]].to_csv(index=False)


def log_confusion_matrix(client: MlflowClient, run_id: str, scored: Scored, title: str) -> None:
    """The confusion matrix (counts; rows are the true labels) as the PNG artifact `confusion_matrix.png` of "
    "`run_id`."""
    from sklearn.metrics import ConfusionMatrixDisplay  # half a second of imports, for the final step only

    display = ConfusionMatrixDisplay.from_predictions(
        scored.truth,
        scored.predicted,
        labels=scored.labels,
        xticks_rotation=30,
        colorbar=False,
        cmap="Blues",
    )
    display.ax_.grid(False)  # no lines through the cells' counts
    display.ax_.set_title(title)
    display.figure_.tight_layout()
    client.log_figure(run_id, display.figure_, CONFUSION_MATRIX)
    plt.close(display.figure_)
