"""bf16 where the hardware has it: `trainer.bf16=auto` (the default) turns it on for a CUDA device with bf16,
or a CPU with AVX512-BF16 or AMX, and off elsewhere; prediction uses the same choice. `trainer.tf32=auto`
(the default) runs what stays in fp32 on a GPU (Ampere or newer) as TF32 matmuls."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

CPU_FLAGS = {"avx512_bf16", "amx_bf16"}  # /proc/cpuinfo's names for native bf16 arithmetic


def supports_bf16() -> bool:
    """Whether the device training runs on (CUDA if there is one, else the CPU) has native bf16."""
    return has_bf16(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def has_bf16(device: torch.device) -> bool:
    # Natively: by default torch also says yes where bf16 is emulated (before Ampere), at a fraction of fp32's speed.
    return torch.cuda.is_bf16_supported(including_emulation=False) if device.type == "cuda" else cpu_supports_bf16()


@functools.cache
def cpu_supports_bf16() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.is_file() else set()
    return bool(flags & CPU_FLAGS)


def training_fields(bf16: object, tf32: object = None) -> dict[str, object]:
    """TrainingArguments' `bf16` and `tf32` for `trainer.bf16` and `trainer.tf32` (`auto`: whether this machine
    supports it; anything else as given, for TrainingArguments to judge), and `use_cpu`, which bf16 on a
    machine without CUDA needs."""
    value = supports_bf16() if bf16 == "auto" else bf16
    fields = {"bf16": value, "tf32": (cuda_supports_tf32() or None) if tf32 == "auto" else tf32}
    return fields | ({"use_cpu": True} if value is True and not torch.cuda.is_available() else {})


def cuda_supports_tf32() -> bool:
    """TF32 matmuls: CUDA devices of compute capability 8.0 (Ampere) and newer."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)


def attention_without_cudnn() -> None:
    """Leave cuDNN out of PyTorch's attention (SDPA) backends. On a Hopper GPU in bf16 PyTorch picks it, and it
    builds a plan for each new sequence length: with batches padded to their own longest text, that is nearly
    every batch, and on an H200 a bert-base training step took 246 ms instead of 35, prediction ran at 673
    texts/s instead of 4,189 (docs/performance.md). Flash and memory-efficient attention take any length.
    For the whole process: the commands train or predict and nothing else."""
    torch.backends.cuda.enable_cudnn_sdp(False)


def inference_dtype(device: torch.device) -> torch.dtype:
    """The weights' dtype for prediction on `device`: bf16 where it has it. Cast once at load, not autocast at
    every call: 1.2x faster on an AMX CPU, the same test accuracy (docs/performance.md)."""
    return torch.bfloat16 if has_bf16(device) else torch.float32
