"""What a study leaves on its MLflow parent run: study plots, the trials table, best params, the accuracy
against speed of the trials (the front, the pick, the budget), confusion matrix."""

from __future__ import annotations

import logging
import warnings

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt
import optuna
import optuna.visualization as plotly_plots
import optuna.visualization.matplotlib as png_plots
from matplotlib import ticker
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from pipeline.schema import BACKBONE
from pipeline.search.study import best_trial, within_budget
from pipeline.tracking.tracker import RUN_ID_ATTR, Tracker
from pipeline.training import speed
from pipeline.training.metrics import OBJECTIVE, Scored
from pipeline.training.speed import Speed

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"
TRIALS_TABLE = "trials.csv"
BEST_PARAMS = "best_params.json"
CONFUSION_MATRIX = "confusion_matrix.png"
SPEED_PLOT = f"{PLOTS_DIR}/accuracy_vs_speed.png"

# Artifact name -> optuna.visualization function name; each is drawn twice: Plotly HTML and matplotlib PNG.
PLOTS = {
    "optimization_history": "plot_optimization_history",
    "param_importances": "plot_param_importances",
    "parallel_coordinate": "plot_parallel_coordinate",
    "intermediate_values": "plot_intermediate_values",
}


def log_study(tracker: Tracker, run_id: str, study: optuna.Study, budget: float | None = None) -> list[str]:
    """Plots, trials table and best params of `study` (the best within `budget` ms per text, if set), as
    artifacts of `run_id`; returns the plots made."""
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
    complete = study.get_trials(deepcopy=False, states=[TrialState.COMPLETE])
    pick = best_trial(study, budget) if within_budget(complete, budget) else None
    if pick is not None:
        tracker.client.log_dict(
            run_id, {"trial": pick.number, OBJECTIVE: pick.value, "params": pick.params}, BEST_PARAMS
        )
    if any(Speed.of(t.user_attrs) for t in complete):
        figure = accuracy_vs_speed(complete, pick, budget)
        tracker.client.log_figure(run_id, figure, SPEED_PLOT)
        plt.close(figure)
        made.append("accuracy_vs_speed")
    return made


def accuracy_vs_speed(complete: list[optuna.trial.FrozenTrial], pick, budget: float | None) -> plt.Figure:
    """Each measured trial's validation accuracy against its milliseconds per text (one colour per backbone),
    the front of trials no other beats on both joined, the pick ringed, the budget drawn."""
    speeds = {t.number: s.predict_ms_per_text for t in complete if (s := Speed.of(t.user_attrs))}
    measured = sorted(
        ((speeds[t.number], t.value, t) for t in complete if t.number in speeds), key=lambda p: (p[0], -p[1])
    )
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for backbone in sorted({str(t.params.get(BACKBONE, "")) for *_, t in measured}):
        points = [(ms, value) for ms, value, t in measured if str(t.params.get(BACKBONE, "")) == backbone]
        axes.scatter(*zip(*points), label=backbone or "trials", alpha=0.7)
    front = pareto_front([(ms, value) for ms, value, _ in measured])
    axes.plot(*zip(*front), color="black", linewidth=1, drawstyle="steps-post", label="front")
    if pick is not None and pick.number in speeds:
        axes.scatter(
            speeds[pick.number],
            pick.value,
            s=220,
            facecolors="none",
            edgecolors="red",
            linewidths=2,
            label=f"pick: trial {pick.number}",
        )
    if budget is not None:
        axes.axvline(budget, color="red", linestyle="--", linewidth=1, label=f"budget {budget:g} ms/text")
    axes.set_xscale("log")
    # Plain numbers at the decades, none between ("3x10^-1" labels on minor ticks ran into each other).
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())
    axes.set_xlabel("milliseconds per text (as pipeline.predict classifies)")
    axes.set_ylabel(OBJECTIVE)
    axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


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
    """CSV, one row per trial: number, state, value, params, speed (where measured), mlflow_run_id, and the
    other attributes (the failure reason, if any)."""
    frame = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs", "duration"))
    frame = frame.rename(columns=lambda c: c.removeprefix("user_attrs_").removeprefix("params_"))
    if RUN_ID_ATTR not in frame:
        frame[RUN_ID_ATTR] = None
    params = sorted({k for t in study.trials for k in t.params})
    first = ["number", "state", "value", *params, *[m for m in speed.METRICS if m in frame], RUN_ID_ATTR]
    return frame[first + [c for c in frame.columns if c not in first]].to_csv(index=False)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (ms per text, accuracy) points no other point beats on both (as fast or faster and more accurate),
    fastest first: walking from the fastest, a point joins when it is more accurate than every faster one."""
    front: list[tuple[float, float]] = []
    for ms, value in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or value > front[-1][1]:
            front.append((ms, value))
    return front


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
