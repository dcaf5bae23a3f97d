"""Search spaces: `sweeps/<space>.yaml` (or a path) parsed and checked into Optuna distributions."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from transformers.trainer_utils import set_seed

from pipeline.errors import PipelineError
from pipeline.schema import BACKBONE, SWEEPS_DIR, space_path
from pipeline.training.args import OWN_ARGS, POSITIVE_ARGS, PipelineArguments

_KINDS = {"categorical": {"choices"}, "int": {"low", "high", "step", "log"}, "float": {"low", "high", "step", "log"}}
_POSITIVE = set(POSITIVE_ARGS)


@dataclass(frozen=True)
class Param:
    """One searched TrainingArguments field (or `seed`, or `model`: the backbones) and its distribution."""

    name: str
    type: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False

    def contains(self, value: Any) -> bool:
        """Whether `value` is one this distribution can draw (a choice; in range, on its step)."""
        if self.type == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.low <= value <= self.high:
            return False
        if self.type == "int" and value != int(value):
            return False
        step = self.step or (1 if self.type == "int" else None)
        return step is None or math.isclose((value - self.low) / step, round((value - self.low) / step), abs_tol=1e-9)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)


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
    if name == BACKBONE:
        return _backbones(spec, where)
    if name != "seed" and name not in PipelineArguments.__dataclass_fields__:
        raise PipelineError(f"{where}: not a transformers.TrainingArguments field (or seed, model, {OWN_ARGS})")
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


def _backbones(spec: Any, where: str) -> Param:
    """`model: {type: categorical, choices: [tiny, minilm]}`: names in conf/model/ or model directories (checked
    when they load, training/backbone.py)."""
    choices = spec.get("choices") if isinstance(spec, dict) else None
    if (
        not isinstance(spec, dict)
        or spec.get("type") != "categorical"
        or set(spec) != {"type", "choices"}
        or not isinstance(choices, list)
        or not choices
        or not all(isinstance(c, str) and c for c in choices)
        or len(set(choices)) != len(choices)
    ):
        raise PipelineError(
            f"{where}: backbones are a categorical of distinct model names or directories, e.g. "
            "{type: categorical, choices: [tiny, minilm]}"
        )
    return Param(BACKBONE, "categorical", choices=tuple(choices))


def backbone_choices(space: list[Param]) -> tuple[str, ...]:
    """The models the space searches over (empty: the configured `model` only)."""
    return next((p.choices for p in space if p.name == BACKBONE), ())


def hp_space(space: list[Param]) -> Callable[[optuna.Trial], dict[str, Any]]:
    """Every param drawn for the trial; the TrainingArguments values returned (the Trainer sets those, and the
    backbone is the trainer's to swap in: PipelineTrainer.train)."""

    def draw(trial: optuna.Trial) -> dict[str, Any]:
        values = {param.name: param.suggest(trial) for param in space}
        values.pop(BACKBONE, None)
        return values

    return draw


def seeded_model_init(model_init: Callable, space: list[Param]) -> Callable:
    """The Trainer seeds and calls model_init before it applies the trial's values, so a searched
    `seed` would reach trial N from trial N-1: draw the trial's seed here first."""
    suggest = hp_space(space)

    def init(trial: optuna.Trial | None = None):
        if trial is not None and any(p.name == "seed" for p in space):
            set_seed(suggest(trial)["seed"])
        return model_init()

    return init


def at_bounds(params: dict[str, Any], space: list[Param], margin: float = 0.05, ties: Sequence[dict] = ()) -> list[str]:
    """Numeric values within `margin` (a fraction of the range, log-scaled for a log range) of an end of
    their range: the optimum may lie outside the space. A searched `seed` has no optimum to miss. `ties`:
    the values of trials that scored as well; an end counts only where each of them sits at it too."""
    found = []
    for param in space:
        end = _range_end(param, params.get(param.name), margin)
        if end and all(_range_end(param, other.get(param.name), margin) == end for other in ties):
            found.append(
                f"{param.name}={params[param.name]:.3g} is at the {end} end of [{param.low:g}, {param.high:g}]"
            )
    return found


def _range_end(param: Param, value: Any, margin: float) -> str | None:
    """'lower' or 'upper' where `value` lies within `margin` of that end of `param`'s range, else None."""
    if param.type == "categorical" or param.name == "seed" or value is None or param.high == param.low:
        return None
    scale = math.log if param.log else float
    position = (scale(value) - scale(param.low)) / (scale(param.high) - scale(param.low))
    return "lower" if position <= margin else "upper" if position >= 1 - margin else None
