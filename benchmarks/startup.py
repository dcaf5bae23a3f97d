"""Cold start: seconds from a command's start to its first useful output, against the floor of what it must
import. `python -m pipeline.predict DIR "one text"` and `python -m pipeline.predict models:/NAME/1 "one
text"` to the printed label; `python -m pipeline` (model=tiny, 1 trial) to its first trial's first epoch line.
The baseline, run in the same script: a process that only imports transformers and loads the same model
directory (`floor`), below which no command that runs a transformers model can start.

    python benchmarks/startup.py [--repeats 3] [--quick]

Each figure is the median of `--repeats` cold processes (`--quick`: 1).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

from devtools.commands import TINY
from pipeline.training import model

FLOOR = (
    "import sys\nfrom transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
    "AutoModelForSequenceClassification.from_pretrained(sys.argv[1]); AutoTokenizer.from_pretrained(sys.argv[1])\n"
)


def seconds_to(command: list[str], cwd: Path, marker: str | None = None) -> float:
    """Wall seconds from start to `marker` in the output (None: to the exit)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        command, cwd=cwd, env=harness.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in proc.stdout:
        if marker is not None and marker in line:
            took = time.monotonic() - started
            proc.kill()
            proc.wait()
            return took
    if proc.wait() != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    work = Path(tempfile.mkdtemp(prefix="startup-"))
    cfg = harness.config("model=tiny").model
    saved = work / "saved"
    model.make_model_init(cfg, ["neg", "pos"])().save_pretrained(saved)
    model.load_tokenizer(cfg).save_pretrained(saved)
    search = [sys.executable, "-m", "pipeline", *TINY, "search.n_trials=1", "trainer.num_train_epochs=1"]
    predict = [sys.executable, "-m", "pipeline.predict"]
    measured = {
        "floor": lambda: seconds_to([sys.executable, "-c", FLOOR, str(saved)], work),
        "predict_dir": lambda: seconds_to([*predict, str(saved), "one text"], work),
        "search_first_epoch": lambda: seconds_to(search, work, marker="epoch 1/1"),
    }
    found = {name: statistics.median(run() for _ in range(repeats)) for name, run in measured.items()}
    # A registered model for the models:/ route: one whole search, once.
    seconds_to(search, work)
    found["predict_registry"] = statistics.median(
        seconds_to([*predict, "models:/ag_news/1", "one text"], work) for _ in range(repeats)
    )
    rows = [{"command": name, "seconds": s, "x_floor": s / found["floor"]} for name, s in found.items()]
    print(f"{harness.machine()}; median of {repeats}")
    print(harness.table(rows, ["command", "seconds", "x_floor"]))
    harness.result_line(**{f"{name}_s": s for name, s in found.items()})


if __name__ == "__main__":
    main()
