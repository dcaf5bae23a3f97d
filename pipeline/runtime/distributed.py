"""torchrun (DDP): rank 0 alone writes to the stores; the other ranks train what it tells them."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig

from pipeline.errors import PipelineError
from pipeline.schema import Mode, Pruner


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun; absent in a plain process


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def device_args() -> dict[str, object]:
    """TrainingArguments that make torchrun on a machine without CUDA run DDP on the CPU (gloo); left
    alone, the Trainer sees no GPU and trains each rank on its own."""
    if world_size() > 1 and not torch.cuda.is_available():
        return {"use_cpu": True, "ddp_backend": "gloo"}
    return {}


def check(cfg: DictConfig) -> None:
    """Refuse what would hang: rank 0 alone learns that Optuna pruned a trial, the other ranks keep
    waiting for it in the next collective."""
    if world_size() > 1 and cfg.mode == Mode.search and cfg.search.pruner != Pruner.none:
        raise PipelineError(
            f"search.pruner={cfg.search.pruner.value}: a pruned trial would hang the other torchrun processes "
            f"(WORLD_SIZE={world_size()}); search under torchrun with search.pruner=none"
        )


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def from_main(value: Any) -> Any:
    """Rank 0's `value`, on every rank."""
    if not _active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def everywhere(flag: bool) -> bool:
    """True only when `flag` holds on every rank (e.g. each one can read a checkpoint)."""
    if not _active():
        return flag
    value = torch.tensor(int(flag))
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())
