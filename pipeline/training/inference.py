"""Classifying texts with a model in memory, as `pipeline.predict` does: truncated as in training, batched by
length without gradients, every class's probability for each text. Shared by the commands (classifier.py) and
each trial's speed measurement (speed.py), so that what a trial measures is what serving runs."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

BATCH_SIZE = 64  # texts per batch; on an H200 too, 64 classified faster than 256 (docs/performance.md)


def probabilities(
    model: PreTrainedModel, tokenizer, texts: list[str], batch_size: int = BATCH_SIZE, progress: bool = False
) -> np.ndarray:
    """Rows of class probabilities, in the order of `texts`. Texts are truncated as in training (the tokenizer's
    model_max_length) and batched by length, so padding costs little."""
    encoded = tokenizer(texts, truncation=True)["input_ids"]
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    result = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    model.eval()
    starts = range(0, len(order), batch_size)
    with torch.inference_mode():
        for start in tqdm(starts, desc="classify", unit="batch", disable=not progress):
            rows = order[start : start + batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt")
            logits = model(**batch.to(model.device)).logits
            result[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return result
