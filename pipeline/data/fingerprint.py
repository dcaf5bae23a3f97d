"""Content identity of the splits: hashes of their label names, texts and labels, independent of file paths,
caches, process and machine (datasets' own fingerprints hash cache paths)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from datasets import Dataset, DatasetDict

from pipeline.data.read import batches, label_names

FINGERPRINT_PREFIX = "sha256:"  # content fingerprints; older, path-dependent ones lack it


@dataclass(frozen=True)
class DataIdentity:
    fingerprint: str  # all splits: what studies and registered versions record
    splits: dict[str, str]  # each split's own digest, for MLflow's dataset inputs


def fingerprint(splits: DatasetDict) -> str:
    return identify(splits).fingerprint


def identify(splits: DatasetDict) -> DataIdentity:
    """Hashes of the splits' content: label names, and each split's texts and labels in order. A study's
    trials, and the test scores of the versions it registers, compare only on the same data.

    Streams over Arrow batches, hashing the string and label buffers as they are: independent of file
    paths, caches, process and machine (datasets' own fingerprints hash cache paths), linear in rows."""
    names = json.dumps(label_names(splits)).encode()
    digest, per_split = hashlib.sha256(names), {}
    for name, ds in splits.items():
        split_digest = hashlib.sha256(names)
        for part in _content(name, ds):
            digest.update(part)
            split_digest.update(part)
        per_split[name] = split_digest.hexdigest()
    return DataIdentity(FINGERPRINT_PREFIX + digest.hexdigest(), per_split)


def _content(name: str, ds: Dataset) -> Iterator[bytes]:
    yield f"\x00split {name} {len(ds)}\x00".encode()
    for batch in batches(ds, ["text", "label"]):
        yield from _string_bytes(batch.column("text").combine_chunks())
        labels = batch.column("label").combine_chunks().cast(pa.int64()).fill_null(-1)
        yield labels.to_numpy(zero_copy_only=False).astype("<i8").tobytes()


def is_content_fingerprint(value: str) -> bool:
    """False for fingerprints recorded before they hashed content (datasets' hashes of cache paths)."""
    return value.startswith(FINGERPRINT_PREFIX)


def _string_bytes(strings: pa.Array) -> Iterator[bytes]:
    """Each string's length, then all their bytes: the same rows hash the same however Arrow laid them out."""
    strings = strings.fill_null("")
    width = "<i8" if pa.types.is_large_string(strings.type) else "<i4"
    offsets = np.frombuffer(strings.buffers()[1], dtype=width)[strings.offset : strings.offset + len(strings) + 1]
    yield np.diff(offsets).astype("<i8").tobytes()
    if len(strings) and strings.buffers()[2] is not None:
        yield memoryview(strings.buffers()[2])[offsets[0] : offsets[-1]]
