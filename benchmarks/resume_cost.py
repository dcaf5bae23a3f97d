"""What resuming interrupted trials costs and saves, on AG News with model=minilm.

    python benchmarks/resume_cost.py [--rows 2400] [--epochs 3] [--kills 3] [--seed 0] [--quick]

1. Writing the state: a search trial of `--epochs` epochs runs in this process through the pipeline's own
   Trainer and ResumableTrials callback; the Trainer's checkpoint call is timed at each epoch's end, against
   the epoch's training time. Disk at the peak: the study's checkpoint_dir (resume state and kept best).
2. Time lost per SIGKILL: the real command (one trial, `--epochs` epochs) is SIGKILLed at a random moment of
   its trial and run again; the time lost is the killed trial's training time plus the rerun trial's, less
   an uninterrupted trial's (Optuna's start and end times of each trial). Each kill moment is tried twice:
   with the state kept (resumed) and with it deleted before the rerun (a retry from scratch, as before).

`--quick`: 600 rows, 2 kills (about 10 minutes on 2 cores); the same result keys.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
import optuna
from optuna.trial import TrialState
from transformers import TrainerCallback

from devtools.commands import study_storage
from pipeline.search import resume
from pipeline.search.space import hp_space, load_space
from pipeline.search.study import trial_name
from pipeline.training.args import training_args
from pipeline.training.trainer import build_trainer, objective

STUDY = "ag_news-minilm"
SPACE = "learning_rate: {type: categorical, choices: [5.0e-5]}\n"


def overrides(rows: int, epochs: int, space: Path) -> list[str]:
    return [
        "model=minilm",
        f"dataset.data_dir={harness.AG_NEWS_DIR}",
        f"dataset.max_train_samples={rows}",
        "dataset.max_eval_samples=400",
        f"trainer.num_train_epochs={epochs}",
        f"search.space={space}",
        "search.n_trials=1",
        "search.pruner=none",
        "search.heartbeat_interval=1",
        "search.grace_period=2",
        f"search.study_name={STUDY}",
    ]


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def save_cost(rows: int, epochs: int, workdir: Path) -> dict:
    """Seconds per epoch, seconds per state written, and the checkpoint_dir's peak size, in one trial."""
    space_file = workdir / "space.yaml"
    cfg = harness.config(*overrides(rows, epochs, space_file), f"search.checkpoint_dir={workdir / 'checkpoints'}")
    prep = harness.prepare(cfg)
    states = resume.states_dir(cfg.search.checkpoint_dir)
    args = training_args(cfg.trainer, str(states), cfg.seed)
    trainer = build_trainer(
        args, prep.model_init, prep.tokenized, prep.tokenizer, resumer=resume.ResumableTrials(states)
    )
    timings = {"epoch_s": [], "save_s": [], "peak_bytes": 0}
    began = {"epoch": 0.0, "save": 0.0}

    class Timer(TrainerCallback):
        """The Trainer saves right after on_evaluate and then calls on_save: the time between is the save's."""

        def on_epoch_begin(self, *a, **k):
            began["epoch"] = time.perf_counter()

        def on_epoch_end(self, *a, **k):
            timings["epoch_s"].append(time.perf_counter() - began["epoch"])

        def on_evaluate(self, *a, **k):
            began["save"] = time.perf_counter()

        def on_save(self, *a, **k):
            timings["save_s"].append(time.perf_counter() - began["save"])
            timings["peak_bytes"] = max(timings["peak_bytes"], du(Path(cfg.search.checkpoint_dir)))

    trainer.add_callback(Timer())
    study = optuna.create_study(direction="maximize")
    trainer.hyperparameter_search(
        hp_space=hp_space(load_space(str(space_file))),
        compute_objective=objective,
        n_trials=1,
        direction="maximize",
        backend="optuna",
        hp_name=trial_name,
        study_name=study.study_name,
    )
    return timings


def trial_seconds(cwd: Path, state: TrialState) -> list[float]:
    study = optuna.load_study(study_name=STUDY, storage=study_storage(cwd))
    return [(t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials if t.state == state]


def run(cwd: Path, argv: list[str]) -> None:
    done = subprocess.run(argv, cwd=cwd, env=harness.env(), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")


def killed_then_rerun(workdir: Path, argv: list[str], kill_after: float, keep_state: bool) -> float:
    """Seconds of training lost: the killed trial's, plus the rerun trial's, less an uninterrupted one's
    (the caller subtracts the latter)."""
    cwd = Path(tempfile.mkdtemp(dir=workdir))
    proc = subprocess.Popen(argv, cwd=cwd, env=harness.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = cwd / "mlruns" / "optuna.db"
    while not started(db):
        if proc.poll() is not None:
            sys.exit("the worker exited before its trial started")
        time.sleep(0.1)
    trained = time.monotonic()
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lost = time.monotonic() - trained
    if not keep_state:
        shutil.rmtree(cwd / "mlruns" / "checkpoints" / STUDY / "resume", ignore_errors=True)
    time.sleep(3)  # past search.grace_period
    run(cwd, argv)
    (rerun,) = trial_seconds(cwd, TrialState.COMPLETE)
    return lost + rerun


def started(db: Path) -> bool:
    """A trial is RUNNING (read without creating anything)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("select count(*) from trials where state = 'RUNNING'").fetchone()[0] > 0
    except sqlite3.OperationalError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2400, help="training rows")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--kills", type=int, default=3, help="kill moments, each tried with and without resuming")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="600 rows, 2 kills")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.kills = 600, 2
    workdir = Path(tempfile.mkdtemp(prefix="resume-cost-"))
    (workdir / "space.yaml").write_text(SPACE)

    cost = save_cost(args.rows, args.epochs, workdir)
    epoch_s = sum(cost["epoch_s"]) / len(cost["epoch_s"])
    save_s = sum(cost["save_s"]) / len(cost["save_s"])
    print(
        f"epoch {epoch_s:.1f} s, state written in {save_s:.2f} s ({save_s / epoch_s:.1%}), "
        f"checkpoint_dir at its peak {cost['peak_bytes'] / 2**20:.0f} MiB",
        flush=True,
    )

    argv = [sys.executable, "-m", "pipeline", *overrides(args.rows, args.epochs, workdir / "space.yaml")]
    straight = Path(tempfile.mkdtemp(dir=workdir))
    run(straight, argv)
    (trial_s,) = trial_seconds(straight, TrialState.COMPLETE)
    rng = random.Random(args.seed)
    moments = [rng.uniform(0, trial_s) for _ in range(args.kills)]
    rows = []
    for moment in moments:
        with_resume = killed_then_rerun(workdir, argv, moment, keep_state=True) - trial_s
        from_scratch = killed_then_rerun(workdir, argv, moment, keep_state=False) - trial_s
        rows.append({"kill_at_s": moment, "lost_resumed_s": with_resume, "lost_from_scratch_s": from_scratch})
        print(harness.table(rows[-1:], list(rows[-1])), flush=True)
    print(f"\nmodel=minilm, {args.rows} rows, {args.epochs} epochs, trial {trial_s:.0f} s, {harness.machine()}")
    print(harness.table(rows, list(rows[0])))
    lost_resumed = sum(r["lost_resumed_s"] for r in rows) / len(rows)
    lost_scratch = sum(r["lost_from_scratch_s"] for r in rows) / len(rows)
    harness.result_line(
        epoch_s=epoch_s,
        save_s=save_s,
        save_fraction=save_s / epoch_s,
        peak_disk_mib=cost["peak_bytes"] / 2**20,
        lost_per_kill_resumed_s=lost_resumed,
        lost_per_kill_from_scratch_s=lost_scratch,
        lost_resumed_in_epochs=lost_resumed / epoch_s,
    )


if __name__ == "__main__":
    main()
