"""Classifying texts with a model in memory, as `pipeline.predict` does: truncated as in training, batched by
length without gradients, every class's probability for each text. Shared by the commands (classifier.py) and
each trial's speed measurement (speed.py), so that what a trial measures is what serving runs."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from pipeline.errors import PipelineError

BATCH_SIZE = 64  # texts per batch; on an H200 too, 64 classified faster than 256 (docs/performance.md)


def probabilities(
    model: PreTrainedModel, tokenizer, texts: list[str], batch_size: int = BATCH_SIZE, progress: bool = False
) -> np.ndarray:
    """Rows of class probabilities, in the order of `texts`. Texts are truncated as in training (the tokenizer's
    model_max_length) and batched by length, so padding costs little. On a GPU each batch's probabilities stay on
    the device and all come back at the end, so the host pads the next batch while the GPU computes (BERT's
    forward still waits for the GPU once, at its attention mask's check in transformers: docs/performance.md)."""
    if not texts:  # the tokenizer fails on none
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    encoded = tokenizer(texts, truncation=True)["input_ids"]
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    pad = Padding(tokenizer.pad_token_id, tokenizer.padding_side == "left", model.device)
    model.eval()
    computed = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc="classify", unit="batch", disable=not progress):
            input_ids, attention_mask = pad([encoded[i] for i in order[start : start + batch_size]])
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
            computed.append(torch.softmax(logits.float(), dim=-1))
        found = torch.cat(computed).cpu().numpy()
    result = np.empty_like(found)
    result[order] = found
    return result


class Padding:
    """A batch of token ids as `input_ids` and `attention_mask` on `device`, padded to its longest text: in
    numpy (a tenth of `tokenizer.pad`'s time on lists of ids), copied to a GPU from pinned memory, asynchronously."""

    def __init__(self, pad_id: int | None, left: bool, device: torch.device) -> None:
        self.pad_id, self.left, self.device = pad_id, left, device

    def __call__(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = np.array([len(ids) for ids in batch])
        width = int(lengths.max())
        if self.pad_id is None and (lengths < width).any():
            raise PipelineError(
                "the model's tokenizer has no padding token, so texts of different lengths cannot share a batch; "
                "give it one (tokenizer.pad_token = tokenizer.eos_token, then save_pretrained) or use --batch-size 1"
            )
        columns = np.arange(width)
        mask = columns >= (width - lengths)[:, None] if self.left else columns < lengths[:, None]
        input_ids = np.full(mask.shape, self.pad_id or 0, dtype=np.int64)  # none: no text is padded
        input_ids[mask] = np.concatenate(batch)  # row by row, each text's ids into its unmasked places
        return self._moved(input_ids), self._moved(mask.astype(np.int64))

    def _moved(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)
