"""The data path at growing sizes: loading a user's CSV, normalizing, splitting, fingerprinting and tokenizing,
cold (an empty datasets cache) and from the cache (the same command again), with each run's peak memory.

    python benchmarks/data_scale.py [--quick]   # 10k, 100k and 1M rows (--quick: 10k and 100k)

Synthetic AG-News-like rows (about 230 characters, string labels) are written to a CSV, and each measurement
is a fresh process running the pipeline's own steps on `dataset=local dataset.train_file=CSV`:
`data.load_splits` (read, normalize, carve validation and test), `data.identify` (the content fingerprint),
`data.tokenize` (model=minilm's tokenizer at the pipeline's max_length). Peak memory is the process's peak
anonymous resident memory (RssAnon: Python's, Arrow's and the tokenizer's heaps, not the pages of the
memory-mapped cache files, which the kernel can drop; sampled every few ms, so a shorter peak is missed), less
that of a process that ran the same steps on 100 rows (imports, tokenizer), against the texts held as Python
strings; `rss_mb` is the whole peak resident set (ru_maxrss), mapped cache pages included.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import harness

WORDS = "market shares rally oil team wins cup final lab study space rocket storm vote court bank".split()
LABELS = ["world", "sports", "business", "science"]
STEPS = ("load_splits", "identify", "tokenize")

CHILD = """
import json, resource, sys, threading, time
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/benchmarks")
def anon_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) / 1024
peak = [anon_mb()]
def sample():
    while True:
        peak[0] = max(peak[0], anon_mb()); time.sleep(0.002)
threading.Thread(target=sample, daemon=True).start()
import os; os.environ["TOKENIZERS_PARALLELISM"] = "true"  # as `python -m pipeline` tokenizes (harness turns it off)
import harness
from pipeline.training import model
from pipeline.data.fingerprint import identify
from pipeline.data.splits import load_splits, tokenize
cfg = harness.config("model=minilm", "dataset=local", "dataset.data_dir=null", "dataset.train_file=" + sys.argv[2])
tokenizer = model.load_tokenizer(cfg.model)
seconds = {}
def timed(name, step):
    started = time.perf_counter()
    made = step()
    seconds[name] = time.perf_counter() - started
    return made
splits = timed("load_splits", lambda: load_splits(cfg.dataset, cfg.seed))
timed("identify", lambda: identify(splits))
timed("tokenize", lambda: tokenize(splits, tokenizer, cfg.dataset.max_length))
peak[0] = max(peak[0], anon_mb())
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"s": seconds, "peak_mb": peak[0], "rss_mb": rss_mb}))
"""


def write_csv(path: Path, n: int, seed: int = 0) -> float:
    """`n` rows of text and label; the mean text length."""
    rng, chars = random.Random(seed), 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["text", "label"])
        for i in range(n):
            text = f"{i} " + " ".join(rng.choices(WORDS, k=38))
            chars += len(text)
            out.writerow([text, LABELS[i % 4]])
    return chars / n


def measure(csv_path: Path, cache: Path) -> dict:
    env = harness.env() | {"HF_DATASETS_CACHE": str(cache)}  # cold: a new directory; cached: the same again
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(harness.ROOT), str(csv_path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 100k rows only")
    sizes = [10_000, 100_000] if parser.parse_args().quick else [10_000, 100_000, 1_000_000]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base_csv = Path(tmp) / "base.csv"
        write_csv(base_csv, 100)
        base = measure(base_csv, Path(tmp) / "base-cache")
        for n in sizes:
            path, cache = Path(tmp) / f"rows-{n}.csv", Path(tmp) / f"cache-{n}"
            mean_chars = write_csv(path, n)
            strings_mb = n * sys.getsizeof("x" * round(mean_chars)) / 1e6
            for when in ("cold", "cached"):
                found = measure(path, cache)
                rows.append(
                    {
                        "rows": n,
                        "run": when,
                        **{f"{k}_s": found["s"][k] for k in STEPS},
                        "total_s": sum(found["s"].values()),
                        "peak_mb": found["peak_mb"] - base["peak_mb"],
                        "rss_mb": found["rss_mb"] - base["rss_mb"],
                        "strings_mb": strings_mb,
                    }
                )
                print(harness.table(rows[-1:], list(rows[-1])), flush=True)
    print(
        f"\n{harness.machine()}; peak memory above a 100-row run's ({base['peak_mb']:.0f} MB anonymous, "
        f"{base['rss_mb']:.0f} MB resident)"
    )
    print(harness.table(rows, list(rows[0])))
    cold = [r for r in rows if r["run"] == "cold"]
    cached = [r for r in rows if r["run"] == "cached"]
    first, last = cold[0], cold[-1]
    growth = last["rows"] / first["rows"]
    harness.result_line(
        rows=last["rows"],
        cold_s=last["total_s"],
        cached_s=cached[-1]["total_s"],
        time_growth=last["total_s"] / first["total_s"] / growth,  # 1.0: linear
        peak_mb=last["peak_mb"],
        strings_mb=last["strings_mb"],
        peak_to_strings=last["peak_mb"] / last["strings_mb"],
    )


if __name__ == "__main__":
    main()
