"""Adversarial training on the word embeddings (FGM, Miyato et al., 2017), off by default
(`trainer.fgm_epsilon`): every step also trains on the batch with the embeddings nudged along the loss gradient."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


def step_again_nudged(step: Callable[[], torch.Tensor], model, epsilon: float) -> None:
    """Run the training `step` once more on embeddings moved `epsilon` along their gradient: its gradients
    add to the clean step's (the Trainer's own backward, so gradient accumulation and DDP stay right)."""
    with nudged_embeddings(model, epsilon):
        step()


@contextmanager
def nudged_embeddings(model, epsilon: float) -> Iterator[None]:
    """The word embeddings moved by `epsilon` (L2 norm) along their gradient, restored exactly on exit."""
    weight = model.get_input_embeddings().weight
    grad = weight.grad
    norm = grad.norm() if grad is not None else None
    if norm is None or norm == 0 or not torch.isfinite(norm):
        yield  # nothing to follow; NanLossGuard reports a non-finite loss
        return
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.add_(grad, alpha=epsilon / norm.item())
    try:
        yield
    finally:
        with torch.no_grad():
            weight.copy_(saved)
