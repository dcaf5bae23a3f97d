"""data.fingerprint at growing sizes: time and peak memory, beside tokenizing the same rows.

    python benchmarks/fingerprint_scale.py [--quick]   # 10k, 100k and 1M rows (--quick: 10k and 100k)

Synthetic AG-News-like rows (about 230 characters, 4 classes) are written to a memory-mapped Arrow file,
as the datasets cache holds a user's CSV, and each split is a selection of a seeded shuffle, as the
pipeline's carve-outs are. Peak memory is what hashing allocates (Arrow's pool, through a proxy that
counts its own peak, plus Python's, where tracemalloc sees numpy's buffers), not the mapped file's pages;
it is compared with the texts held as Python strings. Tokenizing is `data.tokenize` with model=minilm's
tokenizer at the pipeline's max_length, the step a run pays anyway.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import tracemalloc

import harness
import pyarrow as pa
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from pipeline.data.fingerprint import fingerprint
from pipeline.data.splits import tokenize
from pipeline.training import model

WORDS = "market shares rally oil team wins cup final lab study space rocket storm vote court bank".split()


def rows(n: int, seed: int = 0):
    rng = random.Random(seed)
    for i in range(n):
        yield {"text": f"{i} " + " ".join(rng.choices(WORDS, k=38)), "label": i % 4}


def splits(n: int, directory: str) -> DatasetDict:
    features = Features(text=Value("string"), label=ClassLabel(names=["World", "Sports", "Business", "Sci/Tech"]))
    ds = Dataset.from_generator(rows, gen_kwargs={"n": n}, features=features, cache_dir=directory).shuffle(seed=42)
    cut1, cut2 = int(n * 0.8), int(n * 0.9)
    return DatasetDict(
        train=ds.select(range(cut1)), validation=ds.select(range(cut1, cut2)), test=ds.select(range(cut2, n))
    )


def peak_mb(ds: DatasetDict) -> float:
    """What one fingerprint allocates at its peak, Arrow and Python together."""
    pool = pa.proxy_memory_pool(pa.default_memory_pool())
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    tracemalloc.start()
    try:
        fingerprint(ds)
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(previous)
    return (python_peak + pool.max_memory()) / 1e6


def measure(n: int, tokenizer, max_length: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        ds = splits(n, tmp)
        started = time.perf_counter()
        fingerprint(ds)
        seconds = time.perf_counter() - started
        peak = peak_mb(ds)  # a second pass: tracemalloc slows Python down several times
        started = time.perf_counter()
        tokenize(ds, tokenizer, max_length)
        tokenize_s = time.perf_counter() - started
        mean_chars = sum(len(t) for t in ds["train"].select(range(100))["text"]) / 100
    strings_mb = n * sys.getsizeof("x" * round(mean_chars)) / 1e6  # every text as a Python str
    return {"rows": n, "s": seconds, "peak_mb": peak, "strings_mb": strings_mb, "tokenize_s": tokenize_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 100k rows only")
    sizes = [10_000, 100_000] if parser.parse_args().quick else [10_000, 100_000, 1_000_000]
    cfg = harness.config("model=minilm")
    tokenizer = model.load_tokenizer(cfg.model)
    results = [measure(n, tokenizer, cfg.dataset.max_length) for n in sizes]
    for r in results:
        r["us_per_row"] = 1e6 * r["s"] / r["rows"]
        r["of_tokenizing"] = r["s"] / r["tokenize_s"]
    print(harness.table(results, ["rows", "s", "us_per_row", "peak_mb", "strings_mb", "tokenize_s", "of_tokenizing"]))
    first, last = results[0], results[-1]
    harness.result_line(
        fingerprint_rows=last["rows"],
        seconds=last["s"],
        peak_mb=last["peak_mb"],
        strings_mb=last["strings_mb"],
        ratio_to_tokenize=last["of_tokenizing"],
        time_growth_vs_linear=(last["s"] / first["s"]) / (last["rows"] / first["rows"]),
    )
    print(f"machine: {harness.machine()}; reproduce: python benchmarks/fingerprint_scale.py")


if __name__ == "__main__":
    main()
