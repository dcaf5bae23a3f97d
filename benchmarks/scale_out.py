"""Wall time of 6 trials (tiny model): one worker doing all 6 vs 3 workers doing 2 each, sharing the study.

Both against the same real services: Optuna on PostgreSQL (127.0.0.1:5432) and an `mlflow server` with a
PostgreSQL backend. Each worker is the real command (`python -m pipeline ...`), final step included.
Run from the project root: `python benchmarks/scale_out.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.commands import TINY, pipeline_env  # noqa: E402
from devtools.services import ONE_EPOCH_SPACE, mlflow_server, postgres_database  # noqa: E402

TRIALS = 6


def workers(cwd: Path, storage: str, tracking_uri: str, study: str, count: int) -> float:
    """Seconds until `count` workers, started together, have run TRIALS trials of `study` between them."""
    command = [
        sys.executable,
        "-m",
        "pipeline",
        *TINY,
        "trainer.num_train_epochs=1",
        f"search.space={cwd / 'space.yaml'}",
        f"search.storage={storage}",
        f"tracking.uri={tracking_uri}",
        f"search.study_name={study}",
        f"search.n_trials={TRIALS // count}",
    ]
    started = time.monotonic()
    logs = [open(cwd / f"{study}-{i}.log", "w") for i in range(count)]
    processes = [
        subprocess.Popen(command, cwd=cwd, env=pipeline_env(), stdout=log, stderr=subprocess.STDOUT) for log in logs
    ]
    codes = [p.wait() for p in processes]
    elapsed = time.monotonic() - started
    for log in logs:
        log.close()
    if any(codes):
        raise SystemExit(f"a worker failed ({codes}); see {cwd}/{study}-*.log")
    return elapsed


def main() -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        postgres_database("bench_optuna") as optuna_db,
        postgres_database("bench_mlflow") as mlflow_db,
    ):
        cwd = Path(tmp)
        (cwd / "space.yaml").write_text(ONE_EPOCH_SPACE)
        with mlflow_server(mlflow_db, cwd / "artifacts", cwd / "mlflow-server.log") as url:
            one = workers(cwd, optuna_db, url, "one-worker", 1)
            print(f"1 worker x {TRIALS} trials: {one:.1f}s", flush=True)
            three = workers(cwd, optuna_db, url, "three-workers", 3)
            print(f"3 workers x {TRIALS // 3} trials: {three:.1f}s", flush=True)
    print(f"cpu cores: {os.cpu_count()}; load average before the end: {os.getloadavg()[0]:.1f}")
    print(f"result: one_worker_s={one:.1f} three_workers_s={three:.1f} ratio={one / three:.2f}")


if __name__ == "__main__":
    main()
