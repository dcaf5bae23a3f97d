"""bf16 where the hardware has it: `trainer.bf16=auto` (the default) turns it on for a CUDA device with bf16,
or a CPU with AVX512-BF16 or AMX, and off elsewhere; prediction uses the same choice."""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

CPU_FLAGS = {"avx512_bf16", "amx_bf16"}  # /proc/cpuinfo's names for native bf16 arithmetic


@functools.cache
def supports_bf16() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.is_file() else set()
    return bool(flags & CPU_FLAGS)


def training_fields(bf16: object) -> dict[str, object]:
    """TrainingArguments' `bf16` for `trainer.bf16` (`auto`: whether this machine supports it; anything else
    as given, for TrainingArguments to judge), and `use_cpu`, which bf16 on a machine without CUDA needs."""
    value = supports_bf16() if bf16 == "auto" else bf16
    return {"bf16": value, **({"use_cpu": True} if value is True and not torch.cuda.is_available() else {})}


def inference_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for prediction where `trainer.bf16=auto` would train in it."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=supports_bf16())
