"""The terminal: one line per finished trial (and per training outside the search), quieter libraries, and the
summary table at the end."""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import datasets
import optuna
import transformers
from omegaconf import DictConfig
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from pipeline.schema import TrackingConfig
from pipeline.search.internals import OPTIMIZE_LOGGER
from pipeline.search.resume import ResumableTrials
from pipeline.training.internals import current_trial, training_done
from pipeline.training.metrics import OBJECTIVE, said
from pipeline.training.speed import Speed

log = logging.getLogger(__name__)

# Short names for the searched TrainingArguments fields in one-line output; a training's line shows these three.
SHORT = {"per_device_train_batch_size": "batch", "num_train_epochs": "epochs", "learning_rate": "lr"}


def quiet() -> None:
    """Each library warning once per process, not once per trial; Optuna's own per-trial lines, its
    experimental-feature warnings, MLflow's table-creation and system-metrics lines, transformers' weight
    bars off (TrialProgress says more). `verbose=true` keeps them all."""
    if not getattr(warnings.showwarning, "once", False):
        warnings.showwarning = _once(warnings.showwarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # "Loading weights" and "Writing model shards" at every trial, save and load (the Trainer's own bars stay).
    transformers.utils.logging.disable_progress_bar()
    if not on_a_terminal():  # datasets' reading and tokenizing bars, a line per redraw in a log
        datasets.disable_progress_bars()
    # The heartbeat and its retry of dead workers' trials are Optuna "experimental" features, used on purpose.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):  # "Creating initial MLflow database tables"
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # "Started monitoring system metrics"
    # The Hub's model card and license of a local checkpoint: the pipeline writes its own model card.
    logging.getLogger("mlflow.transformers").setLevel(logging.ERROR)
    # A parallel-coordinate plot of trials that all scored the same (its axis is widened anyway).
    warnings.filterwarnings("ignore", message="Attempting to set identical low and high ylims")
    trials = logging.getLogger(OPTIMIZE_LOGGER)  # "Trial N failed ... because of the following error"
    if _without_traceback not in trials.filters:
        trials.addFilter(_without_traceback)


class ConsoleFormatter(logging.Formatter):
    """The terminal's log lines: a message alone, a warning or error marked as such (Hydra's log file keeps
    the time and logger of each line)."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno <= logging.INFO else f"{record.levelname.lower()}: {message}"


def _without_traceback(record: logging.LogRecord) -> bool:
    """A failed trial in one line: its error is kept (Optuna's user attribute `error`, MLflow's tag
    pipeline.error), and a traceback per failed trial buries the search's progress lines."""
    record.exc_info, record.exc_text = None, None
    return True


def _once(show: Callable) -> Callable:
    # Not the "once" filter action: every warnings.catch_warnings() block (the Trainer and Optuna open
    # them per trial) resets what the filters have seen. showwarning survives them.
    seen: set[tuple[type, str]] = set()

    def show_once(message, category, filename, lineno, file=None, line=None) -> None:
        if (category, str(message)) not in seen:
            seen.add((category, str(message)))
            show(message, category, filename, lineno, file, line)

    show_once.once = True
    return show_once


def on_a_terminal() -> bool:
    """Whether progress bars can redraw in place: stderr (where tqdm draws) is a terminal, not CI, `nohup` or a
    log file, where each redraw would be one more line."""
    return sys.stderr.isatty()


class BarsOnly(ProgressCallback):
    """The Trainer's progress bars, named for the trial and epoch in training (`label`: the trial's name), without
    the dict of losses it prints at every logging step (they go to MLflow; TrialProgress and TrainingProgress sum
    a training up in one line)."""

    def __init__(self, trainer, label: Callable[[optuna.Trial], str]) -> None:
        super().__init__()
        self.trainer, self.label = trainer, label

    def on_epoch_begin(self, args, state, control, **kwargs: Any) -> None:
        trial = current_trial(self.trainer)
        if self.training_bar is not None and isinstance(trial, optuna.Trial):
            epoch = int(state.epoch or 0) + 1
            self.training_bar.set_description(f"{self.label(trial)} epoch {epoch}/{round(args.num_train_epochs)}")

    def on_log(self, args, state, control, logs=None, **kwargs: Any) -> None:
        return None


class EpochLines(TrainerCallback):
    """Off a terminal: one plain line per epoch (`trial 1/3 (#0) epoch 2/3: eval_accuracy 0.8125 in 0:04`)
    where a bar would redraw hundreds of times."""

    def __init__(self, trainer, label: Callable[[optuna.Trial], str]) -> None:
        self.trainer, self.label, self.started = trainer, label, time.monotonic()

    def on_epoch_begin(self, args, state, control, **kwargs: Any) -> None:
        self.started = time.monotonic()

    def on_evaluate(self, args, state, control, metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not metrics or OBJECTIVE not in metrics:
            return
        trial = current_trial(self.trainer)
        name = f"{self.label(trial)} " if isinstance(trial, optuna.Trial) else ""
        log.info(
            "%sepoch %d/%d: %s %.4f in %s",
            name,
            round(state.epoch or 0),
            round(args.num_train_epochs),
            OBJECTIVE,
            metrics[OBJECTIVE],
            _clock(time.monotonic() - self.started),
        )


def use_bars_only(trainer, label: Callable[[optuna.Trial], str] = lambda trial: f"trial #{trial.number}") -> None:
    """The Trainer's bars as BarsOnly on a terminal, else EpochLines."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(BarsOnly(trainer, label) if on_a_terminal() else EpochLines(trainer, label))


def params_text(params: dict[str, Any]) -> str:
    return " ".join(
        f"{SHORT.get(k, k)}={v:.3g}" if isinstance(v, float) else f"{SHORT.get(k, k)}={v}" for k, v in params.items()
    )


class EpochAccuracies(TrainerCallback):
    """A training's validation accuracy after each epoch, and when it started."""

    def __init__(self) -> None:
        self.training_started = 0.0
        self.accuracies: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs: Any) -> None:
        self.training_started, self.accuracies = time.monotonic(), []

    def on_evaluate(self, args, state, control, metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        if metrics and OBJECTIVE in metrics:
            self.accuracies.append(metrics[OBJECTIVE])

    def by_epoch(self) -> str:
        return " ".join(f"{a:.3f}" for a in self.accuracies) or "-"


class TrainingProgress(EpochAccuracies):
    """A training outside the search (mode=train, or the best trial trained again): `trained params | acc
    per epoch | in time`, one line (rank 0's) instead of the Trainer's dict at every logging step and evaluation.
    `searched`: the best trial's params, shown beside batch size, epochs and learning rate, each with the value
    the training ran with (the backbone, not a training argument, as searched)."""

    def __init__(self, searched: dict[str, Any] | Iterable[str] = ()) -> None:
        super().__init__()
        self.searched = dict(searched) if isinstance(searched, dict) else dict.fromkeys(searched)
        self.names = list(dict.fromkeys([*SHORT, *self.searched]))

    def on_train_end(self, args, state, control, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        shown = {name: getattr(args, name, self.searched.get(name)) for name in self.names}
        log.info(
            "trained %s | %s by epoch: %s | in %s",
            params_text(shown),
            OBJECTIVE,
            self.by_epoch(),
            _clock(time.monotonic() - self.training_started),
        )


class TrialProgress(EpochAccuracies):
    """After each trial: `trial i/N (#number) params | acc per epoch | complete/pruned | elapsed, ~left`."""

    def __init__(
        self, trainer, n_trials: int, timeout: float | None = None, resumer: ResumableTrials | None = None
    ) -> None:
        super().__init__()
        self.trainer, self.n_trials, self.timeout, self.resumer = trainer, n_trials, timeout, resumer
        self.done, self.started = 0, time.monotonic()
        self.resumed = ""  # what a retried trial continued from

    def on_train_begin(self, args, state, control, **kwargs: Any) -> None:
        super().on_train_begin(args, state, control, **kwargs)
        self.resumed = ""
        resumed = self.resumer.resumed if self.resumer is not None else None
        if resumed is not None and resumed.epoch:  # the epochs it continues from
            earlier = sorted(resumed.earlier.intermediate_values.items())
            self.accuracies = [value for step, value in earlier if step <= resumed.epoch]
            self.resumed = f" (resumed #{resumed.trial} after epoch {resumed.epoch})"

    def on_train_end(self, args, state, control, **kwargs: Any) -> None:
        trial = current_trial(self.trainer)
        if not isinstance(trial, optuna.Trial):
            return
        self.done += 1
        outcome = "complete" if training_done(state) else "pruned"
        log.info("%s", self.line(trial.number, trial.params, outcome))

    def label(self, trial: optuna.Trial) -> str:
        """The trial in training, as its bar and its line name it: `trial 2/3 (#5)` (the 2nd of this run's 3,
        the study's trial number 5)."""
        return f"trial {self.done + 1}/{self.n_trials} (#{trial.number})"

    def line(self, number: int, params: dict[str, Any], outcome: str) -> str:
        now = time.monotonic()
        elapsed = now - self.started
        left = time_left(elapsed, self.done, self.n_trials, self.timeout)
        return (
            f"trial {self.done}/{self.n_trials} (#{number}) {params_text(params)} | {OBJECTIVE} by epoch: "
            f"{self.by_epoch()} | {outcome}{self.resumed} in {_clock(now - self.training_started)} | "
            f"elapsed {_clock(elapsed)}, ~{_clock(left)} left"
        )


def time_left(elapsed: float, done: int, n_trials: int, timeout: float | None) -> float:
    """Seconds until the search ends: the trials still to run at the mean pace so far, or, when
    `search.timeout` comes first, the time until it plus the one trial that may start just before it
    (called as a trial ends: past the timeout, no other starts)."""
    per_trial = elapsed / done
    left = per_trial * max(n_trials - done, 0)
    if timeout is None:
        return left
    return min(left, timeout - elapsed + per_trial) if elapsed < timeout else 0.0


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


UNFOLDED = 4096  # columns: wide enough for any row; the table is as wide as its widest row
TIES_SHOWN = 8  # trial numbers named in the ties row; the rest are counted


@dataclass
class Summary:
    """What the summary table shows; `study` is None for a single training run."""

    study: optuna.Study | None
    test_metrics: dict[str, float]
    model_uri: str
    champion: str | None
    tracking_uri: str
    storage: str | None = None
    best: optuna.trial.FrozenTrial | None = None
    next_steps: list[str] = field(default_factory=list)  # `next_commands`'s, printed last
    decision: str | None = None  # the champion rule's line on this version
    ties: list[int] = field(default_factory=list)  # trials within one standard error of the best (study.ties)
    validation_rows: int = 0  # the validation rows the trials were scored on
    seeds: str | None = None  # with search.seeds > 1: each seed's validation accuracy (finalize.Seeds.line)
    speed: Speed | None = None  # the best trial's model's speed, measured at the trial's end
    budget: str | None = None  # with registry.max_ms_per_text: what the budget cost (study.budget_line)


def summary_table(s: Summary) -> Table:
    table = Table(title="pipeline summary", show_header=False, title_justify="left")
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    if s.study is not None:
        states = [t.state for t in s.study.get_trials(deepcopy=False)]
        counts = ", ".join(f"{states.count(st)} {st.name.lower()}" for st in TrialState if states.count(st))
        table.add_row("study", f"{s.study.study_name}: {len(states)} trials ({counts})")
    if s.best is not None:
        table.add_row("best trial", f"#{s.best.number} {params_text(s.best.params)}")
        table.add_row("validation accuracy", f"{s.best.value:.4f}")
    if len(s.ties) > 1:
        table.add_row("ties", ties_line(s.ties, s.validation_rows))
    if s.seeds:
        table.add_row("seeds", s.seeds)
    if s.speed:
        table.add_row("speed", s.speed.line())
    if s.budget:
        table.add_row("budget", s.budget)
    table.add_row("test", said(s.test_metrics))
    held = f"champion: version {s.champion}" if s.champion else "no champion"
    table.add_row("model", f"{s.model_uri} ({held})")
    if s.decision:
        table.add_row("registry", s.decision)
    return table


def ties_line(trials: list[int], rows: int) -> str:
    """`trials 0, 2 tie within noise on 120 validation rows: more validation rows would separate them`."""
    shown = ", ".join(map(str, trials[:TIES_SHOWN]))
    if len(trials) > TIES_SHOWN:
        shown += f" and {len(trials) - TIES_SHOWN} more"
    return f"trials {shown} tie within noise on {rows:,} validation rows: more validation rows would separate them"


def commands(s: Summary) -> list[str]:
    """How to look at the results, one copyable line each (outside the table, so never wrapped or boxed)."""
    if s.tracking_uri.startswith(("http://", "https://")):
        lines = [f"MLflow UI: open {s.tracking_uri}"]
    else:
        lines = [f"MLflow UI: mlflow ui --backend-store-uri {s.tracking_uri}   (then open http://127.0.0.1:5000)"]
    if s.storage is not None:
        lines.append(f"Optuna dashboard: optuna-dashboard {s.storage}")
    return lines


def next_commands(cfg: DictConfig, model_uri: str, version: str, champion: str) -> list[str]:
    """What to do with the model, ready to copy: classify a file, score labelled rows, serve it over HTTP. The
    URI is the alias while this version holds it; the files and columns are the run's own where it has them."""
    name = model_uri.removeprefix("models:/").rsplit("/", 1)[0]
    uri = f"models:/{name}@{cfg.registry.alias}" if version == champion else model_uri
    options = []
    if list(cfg.dataset.text_columns) != ["text"]:
        options.append(f"--text-columns {','.join(cfg.dataset.text_columns)}")
    if cfg.tracking.uri != TrackingConfig.uri:
        options.append(f"--tracking-uri {cfg.tracking.uri}")
    extra = "".join(f" {o}" for o in options)
    rows = cfg.dataset.test_file or cfg.dataset.train_file or "FILE.csv"
    labelled = cfg.dataset.test_file or "LABELLED.csv"
    return [
        f"python -m pipeline.predict {uri} --input {rows} --output predictions.csv{extra}",
        f"python -m pipeline.evaluate {uri} {labelled} --label-column {cfg.dataset.label_column}{extra}",
        f"MLFLOW_TRACKING_URI={cfg.tracking.uri} mlflow models serve -m {uri} --env-manager local --port 5001",
    ]


def print_summary(s: Summary) -> None:
    """The table, then the commands to look at the results and to use the model, one unwrapped line each."""
    console = Console()
    if not console.is_terminal:  # a log or a pipe: the table as wide as it needs, not folded at 80 columns
        console = Console(width=UNFOLDED)
    console.print(summary_table(s))
    for line in commands(s):
        console.print(line, soft_wrap=True, highlight=False)
    if s.next_steps:
        console.print("Use the model:", highlight=False)
        for line in s.next_steps:
            console.print(f"  {line}", soft_wrap=True, highlight=False)
