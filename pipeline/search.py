"""sweeps/<space>.yaml -> hp_space; the Optuna study (storage, sampler, pruner); the search itself."""
from __future__ import annotations

import json
import math
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState
from transformers import TrainerCallback
from transformers.trainer_utils import set_seed

from pipeline.data import is_content_fingerprint
from pipeline.errors import PipelineError
from pipeline.schema import Pruner, Sampler, SearchConfig
from pipeline.train import OWN_ARGS, POSITIVE_ARGS, PipelineArguments, PipelineTrainer, objective, training_done
from pipeline.workers import TrialSeededSampler

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"
DIRECTION = "maximize"  # validation accuracy
_KINDS = {"categorical": {"choices"}, "int": {"low", "high", "step", "log"}, "float": {"low", "high", "step", "log"}}
_POSITIVE = set(POSITIVE_ARGS)


@dataclass(frozen=True)
class Param:
    """One searched TrainingArguments field (or `seed`) and its distribution."""

    name: str
    type: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)


def space_path(space: str) -> Path:
    """`search.space` is a name in sweeps/ or a path to a YAML file."""
    return Path(space) if space.endswith((".yaml", ".yml")) else SWEEPS_DIR / f"{space}.yaml"


def load_space(space: str) -> list[Param]:
    path = space_path(space)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml")))
        raise PipelineError(f"search.space={space}: no file {path} (known spaces: {known})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise PipelineError(f"search.space={space}: {path} is not valid YAML ({err.problem})") from None
    if not isinstance(raw, dict) or not raw:
        raise PipelineError(f"search.space={space}: {path} must map parameter names to distributions")
    return [parse_param(name, spec, path) for name, spec in raw.items()]


def parse_param(name: str, spec: Any, path: Path | str) -> Param:
    """Validate one entry of a search space; every problem names the parameter and the file."""
    where = f"{path}: {name}"
    if name != "seed" and name not in PipelineArguments.__dataclass_fields__:
        raise PipelineError(f"{where}: not a transformers.TrainingArguments field (or seed, {OWN_ARGS})")
    if not isinstance(spec, dict) or spec.get("type") not in _KINDS:
        raise PipelineError(f"{where}: needs `type` (one of {', '.join(_KINDS)})")
    kind = spec["type"]
    extra = set(spec) - _KINDS[kind] - {"type"}
    if extra:
        raise PipelineError(f"{where}: unknown key {sorted(extra)[0]!r} for a {kind} distribution")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise PipelineError(f"{where}: categorical needs a non-empty `choices` list")
        if name in _POSITIVE and any(not isinstance(c, (int, float)) or c <= 0 for c in choices):
            raise PipelineError(f"{where}: every choice must be a positive number, got {choices}")
        return Param(name, kind, choices=tuple(choices))
    low, high = spec.get("low"), spec.get("high")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise PipelineError(f"{where}: {kind} needs numeric `low` and `high`")
    if low > high:
        raise PipelineError(f"{where}: low={low} is greater than high={high}")
    if name in _POSITIVE and low <= 0:
        raise PipelineError(f"{where}: low={low} must be positive")
    if spec.get("log") and low <= 0:
        raise PipelineError(f"{where}: a log distribution needs low > 0")
    return Param(name, kind, low=low, high=high, step=spec.get("step"), log=bool(spec.get("log", False)))


def hp_space(space: list[Param]) -> Callable[[optuna.Trial], dict[str, Any]]:
    return lambda trial: {param.name: param.suggest(trial) for param in space}


def seeded_model_init(model_init: Callable, space: list[Param]) -> Callable:
    """The Trainer seeds and calls model_init before it applies the trial's values, so a searched
    `seed` would reach trial N from trial N-1: draw the trial's seed here first."""
    suggest = hp_space(space)

    def init(trial: optuna.Trial | None = None):
        if trial is not None and any(p.name == "seed" for p in space):
            set_seed(suggest(trial)["seed"])
        return model_init()

    return init


def open_study(
    cfg: SearchConfig,
    space: list[Param],
    rdb: optuna.storages.BaseStorage,
    start: dict[str, Any] | None = None,
    data: str | None = None,
) -> optuna.Study:
    """Create the study (its first trial: the configured `start` values), or load it and check it was
    made for this space, direction and `data` (a fingerprint of the splits; None: neither checked nor recorded)."""
    study = optuna.create_study(study_name=cfg.study_name, storage=rdb, direction=DIRECTION, load_if_exists=True)
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:  # before marking it as ours below
        raise PipelineError(f"search.study_name={cfg.study_name} minimises; this pipeline maximises accuracy")
    fingerprint = json.dumps([asdict(p) for p in space], sort_keys=True)
    stored = study.user_attrs.get("search_space")
    if stored is None:
        study.set_user_attr("search_space", fingerprint)
        if start:
            study.enqueue_trial({p.name: start[p.name] for p in space if p.name in start}, skip_if_exists=True)
    elif stored != fingerprint:
        raise PipelineError(
            f"search.study_name={cfg.study_name} was created with a different search space than "
            f"search.space={cfg.space}; use a new search.study_name"
        )
    if data is not None:
        _check_data(study, data)
    return study


def _check_data(study: optuna.Study, data: str) -> None:
    """Record the study's data fingerprint, or refuse a run on other rows: its trials would not compare."""
    stored = study.user_attrs.get("data")
    # A new study, one from before studies recorded their data, or one recorded under the older,
    # path-dependent fingerprint (which cannot be recomputed): this run's content fingerprint is recorded.
    if stored is None or not is_content_fingerprint(stored):
        study.set_user_attr("data", data)
    elif stored != data:
        raise PipelineError(
            f"search.study_name={study.study_name} was created on other data (its train, validation or test rows "
            "differ from this run's: other files, dataset.* or seed); use a new search.study_name, or dataset.name=NAME "
            "for a new experiment"
        )


def make_sampler(cfg: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    if cfg.sampler == Sampler.random:
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.n_startup_trials, constant_liar=True)


def make_pruner(cfg: SearchConfig) -> optuna.pruners.BasePruner:
    if cfg.pruner == Pruner.median:
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.n_startup_trials)
    if cfg.pruner == Pruner.hyperband:
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def run(trainer: PipelineTrainer, cfg: SearchConfig, space: list[Param], study: optuna.Study, seed: int) -> None:
    """Run `search.n_trials` more trials of the study (fewer if `search.timeout` runs out) through
    Trainer.hyperparameter_search."""
    try:
        _search(trainer, cfg, space, study, seed)
    except ValueError:
        # transformers reads study.best_trial at the end, which Optuna refuses while no trial has completed
        # ("Record does not exist"); best_trial() says so in one line, with the trials' errors.
        if study.get_trials(deepcopy=False, states=[TrialState.COMPLETE]):
            raise


def _search(trainer: PipelineTrainer, cfg: SearchConfig, space: list[Param], study: optuna.Study, seed: int) -> None:
    trainer.hyperparameter_search(
        hp_space=hp_space(space),
        compute_objective=objective,
        n_trials=cfg.n_trials,
        timeout=cfg.timeout,
        direction=DIRECTION,
        backend="optuna",
        hp_name=trial_name,
        # The rest goes to optuna.create_study / study.optimize.
        study_name=study.study_name,
        storage=study._storage,
        load_if_exists=True,
        # Seeded per trial number: concurrent workers draw apart, a resumed study does not replay its first draws.
        sampler=TrialSeededSampler(lambda trial_seed: make_sampler(cfg, trial_seed), seed),
        pruner=make_pruner(cfg),
        catch=(Exception,),  # a crashing trial is recorded FAIL; the study goes on
    )


def follow(trainer: PipelineTrainer, cfg: SearchConfig, space: list[Param]) -> None:
    """A torchrun rank other than 0: transformers hands it each trial rank 0 samples (as a FixedTrial)."""
    trainer.hyperparameter_search(
        hp_space=hp_space(space), compute_objective=objective, n_trials=cfg.n_trials, direction=DIRECTION,
        backend="optuna", hp_name=trial_name,
    )


def trial_name(trial: optuna.Trial) -> str:
    return f"trial-{trial.number}"


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    complete = study.get_trials(deepcopy=False, states=[TrialState.COMPLETE])
    if not complete:
        failed = study.get_trials(deepcopy=False, states=[TrialState.FAIL])
        errors = sorted({t.user_attrs.get("error", "no error recorded") for t in failed})
        said = f"; {len(failed)} failed: " + " | ".join(e.splitlines()[0][:200] for e in errors[:3]) if failed else ""
        raise PipelineError(
            f"search.study_name={study.study_name} has no completed trial yet{said}; fix the cause and run the "
            "same command again (each trial's error is in MLflow, tag pipeline.error)"
        )
    return max(complete, key=lambda t: (t.value, -t.number))


def at_bounds(params: dict[str, Any], space: list[Param], margin: float = 0.05) -> list[str]:
    """Numeric values within `margin` (a fraction of the range, log-scaled for a log range) of an end of
    their range: the optimum may lie outside the space. A searched `seed` has no optimum to miss."""
    found = []
    for param in space:
        value = params.get(param.name)
        if param.type == "categorical" or param.name == "seed" or value is None or param.high == param.low:
            continue
        scale = math.log if param.log else float
        position = (scale(value) - scale(param.low)) / (scale(param.high) - scale(param.low))
        if position <= margin or position >= 1 - margin:
            end = "lower" if position <= margin else "upper"
            found.append(f"{param.name}={value:.3g} is at the {end} end of [{param.low:g}, {param.high:g}]")
    return found


class KeepBestTrial(TrainerCallback):
    """Save a finished trial's weights when it beats the study's best, and drop the weights it displaces,
    so disk holds one checkpoint however many trials run; the final step reuses it instead of retraining."""

    def __init__(self, trainer: PipelineTrainer, study: optuna.Study, directory: str) -> None:
        self.trainer, self.study, self.directory = trainer, study, Path(directory)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs: Any) -> None:
        trial = self.trainer.trial
        value = getattr(self.trainer, "objective", None)
        if not isinstance(trial, optuna.Trial) or value is None:
            return
        if not training_done(state):  # a trial about to be pruned is no candidate
            return
        previous = self._best()
        if previous is not None and value <= previous.value:
            return
        target = self.directory / trial_name(trial)
        staging = self.directory / f".{target.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        processing_class.save_pretrained(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # a checkpoint directory is either whole or absent
        self._drop_all_but(target.name, previous)

    def _best(self) -> optuna.trial.FrozenTrial | None:
        try:
            return best_trial(self.study)
        except PipelineError:
            return None

    def _drop_all_but(self, keep: str, previous: optuna.trial.FrozenTrial | None) -> None:
        # The previous best stays until this trial is told COMPLETE; the next save removes it.
        kept = {keep, trial_name(previous)} if previous else {keep}
        for path in self.directory.glob("trial-*"):
            if path.name not in kept:
                shutil.rmtree(path, ignore_errors=True)


def checkpoint_for(trial: optuna.trial.FrozenTrial, directory: str) -> Path | None:
    """The kept weights of `trial`, if this machine has them."""
    path = Path(directory) / trial_name(trial)
    return path if (path / "config.json").is_file() else None


def fail_stale_trials(study: optuna.Study) -> None:
    """FAIL (and queue one retry of) RUNNING trials whose worker stopped heartbeating more than
    search.grace_period ago: a SIGKILL or a lost machine. Optuna does this before each new trial;
    doing it when a run starts repairs a killed run even if this run starts no trial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


_CHECKPOINT = re.compile(r"^\.?trial-(\d+)(\.partial)?$")


def drop_checkpoints(study: optuna.Study, best: optuna.trial.FrozenTrial, directory: str) -> None:
    """Remove kept weights (and a killed save's `.partial` leftovers) of every finished trial but `best`.

    KeepBestTrial keeps the previous best until the new one is COMPLETE, and a killed worker may leave
    a partial save; a trial still running (another worker's) keeps its files."""
    finished = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    for path in Path(directory).glob("*trial-*"):
        found = _CHECKPOINT.match(path.name)
        if found and int(found.group(1)) in finished and int(found.group(1)) != best.number:
            shutil.rmtree(path, ignore_errors=True)
