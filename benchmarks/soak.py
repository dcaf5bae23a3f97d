"""Soak test (not part of the suite): a search of model=tiny whose worker is SIGKILLed at random moments
and restarted with the same command each time, until the study has --trials completed trials. Then
Optuna and MLflow must agree trial for trial and no MLflow run may be left RUNNING.

    python benchmarks/soak.py [--trials 30] [--seed 0] [--workdir DIR] [--quick]

Each trial is tiny (64 rows, 1-3 epochs), so 30 trials with the kills take about ten minutes on 2 cores
(--quick: 8 trials). Killed trials are resumed from their last finished epoch (resume.py): the result line
counts the epochs trained again after the kills, beside the count had every retry started from scratch.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from devtools.audit import audit  # noqa: E402
from devtools.commands import study_storage, tracking_uri  # noqa: E402
from pipeline.search.resume import RESUMED_FROM_EPOCH  # noqa: E402

STUDY = "ag_news-tiny"
SPACE = {
    "learning_rate": {"type": "float", "low": 1.0e-4, "high": 3.0e-3, "log": True},
    "num_train_epochs": {"type": "int", "low": 1, "high": 3},
}


def command(workdir: Path, n_trials: int, mode: str = "search") -> list[str]:
    return [
        sys.executable, "-m", "pipeline", "model=tiny", f"mode={mode}",
        f"dataset.data_dir={ROOT.parent / 'shared' / 'data' / 'ag_news_csv'}",
        "dataset.max_train_samples=64", "dataset.max_eval_samples=32", "dataset.max_length=32",
        "trainer.learning_rate=0.001", "trainer.num_train_epochs=1", "trainer.logging_steps=4",
        f"search.study_name={STUDY}",
        f"search.space={workdir / 'space.yaml'}", f"search.n_trials={n_trials}", "search.pruner=none",
        # A killed worker's trial is stale 2 s after its last heartbeat: the restart (longer) repairs it.
        "search.heartbeat_interval=1", "search.grace_period=2",
    ]  # fmt: skip


def completed(workdir: Path) -> int:
    db = workdir / "mlruns" / "optuna.db"
    try:
        study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{db}") if db.exists() else None
    except KeyError:  # killed before the study was created
        study = None
    if study is None:
        return 0
    return len(study.get_trials(deepcopy=False, states=[TrialState.COMPLETE]))


def trials_started(workdir: Path) -> int:
    """Trials in the study, any state (read-only, so nothing is created or locked for long)."""
    db = workdir / "mlruns" / "optuna.db"
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("select count(*) from trials").fetchone()[0]
    except sqlite3.OperationalError:  # no database or tables yet
        return 0


def wait_for_trial(proc: subprocess.Popen, workdir: Path, count: int) -> bool:
    """Wait until the study holds `count` trials (the worker started that one); False if it exited first."""
    while proc.poll() is None:
        if trials_started(workdir) >= count:
            return True
        time.sleep(0.5)
    return False


def epochs_retrained(study: optuna.Study) -> tuple[int, int]:
    """Epochs that retries trained again: as they ran (from the interrupted trial's last saved epoch), and
    had each started from scratch (every epoch the interrupted trial had finished)."""
    by_number = {t.number: t for t in study.trials}
    resumed = from_scratch = 0
    for trial in study.trials:
        history = trial.system_attrs.get("retry_history") or []
        if history and trial.state.is_finished():
            finished = len(by_number[history[-1]].intermediate_values)
            resumed += max(finished - trial.user_attrs.get(RESUMED_FROM_EPOCH, 0), 0)
            from_scratch += finished
    return resumed, from_scratch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-trials-per-worker", type=int, default=7, help="a worker dies in trial 1..N")
    parser.add_argument("--kill-within", type=float, default=4.0, help="seconds into that trial, uniform")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="8 trials")
    args = parser.parse_args()
    if args.quick:
        args.trials = 8
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "space.yaml").write_text(yaml.safe_dump(SPACE))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    rng = random.Random(args.seed)
    started, starts, kills = time.monotonic(), 0, 0
    clean = False
    while not (clean and completed(workdir) >= args.trials):
        remaining = args.trials - completed(workdir)
        # With every trial done, a finalize run repairs what the last kill left and registers the best.
        argv = command(workdir, remaining) if remaining > 0 else command(workdir, 0, mode="finalize")
        with open(workdir / "worker.log", "a") as log:
            proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        starts += 1
        # Kill while the worker's k-th trial (k random) is in progress, at a random moment of it.
        if remaining > 0 and wait_for_trial(
            proc, workdir, trials_started(workdir) + rng.randint(1, args.max_trials_per_worker)
        ):
            time.sleep(rng.uniform(0, args.kill_within))
        try:
            code = proc.wait(timeout=0 if remaining > 0 else None)
        except subprocess.TimeoutExpired:
            proc.kill()  # SIGKILL: no finally, no atexit, no flush
            proc.wait()
            kills += 1
            clean = False
            print(
                f"[{time.monotonic() - started:6.0f}s] killed worker {starts}; {completed(workdir)} trials complete",
                flush=True,
            )
            continue
        if code != 0:
            print(f"worker {starts} exited {code}; see {workdir / 'worker.log'}", file=sys.stderr)
            return 1
        clean = True
        print(
            f"[{time.monotonic() - started:6.0f}s] worker {starts} finished; {completed(workdir)} trials complete",
            flush=True,
        )

    study = optuna.load_study(study_name=STUDY, storage=study_storage(workdir))
    uri = tracking_uri(workdir)
    result = audit(study, MlflowClient(uri, uri), "ag_news")
    print(f"workers started {starts}, SIGKILLed {kills}, {time.monotonic() - started:.0f}s")
    print(result.summary())
    resumed, from_scratch = epochs_retrained(study)
    print(
        f"result: soak consistent={result.consistent} kills={kills} epochs_retrained={resumed} "
        f"epochs_retrained_without_resuming={from_scratch}"
    )
    for line in result.disagreements + [f"RUNNING: {name}" for name in result.running_runs]:
        print("  " + line)
    print("consistent" if result.consistent else "INCONSISTENT")
    return 0 if result.consistent else 1


if __name__ == "__main__":
    sys.exit(main())
