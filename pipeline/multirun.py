"""A Hydra multirun's last line: its best job by validation accuracy (never by test), with its test score.
Each job leaves `multirun_job.json` in its output directory as it ends, in whatever process the launcher ran it
(this one, or a SLURM job under the submitit launcher), and the multirun reads them back at its end. Hydra
makes this callback before every run, so it stays light: it imports nothing of the pipeline's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

JOB_FILE = "multirun_job.json"  # in each job's output directory: what the multirun's last line needs of it


class BestJob(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        for stale in Path(config.hydra.sweep.dir).rglob(JOB_FILE):  # a sweep directory used before
            stale.unlink()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        final = job_return.return_value if job_return.status == JobStatus.COMPLETED else None
        if final is None or final.validation is None or HydraConfig.get().mode != RunMode.MULTIRUN:
            return
        found = {
            "model": config.model.name,
            "study": config.search.study_name,
            "validation": final.validation,
            "test_accuracy": final.test_accuracy,
            "low": final.metrics.get("test_accuracy_low"),  # none from a version registered before intervals
            "high": final.metrics.get("test_accuracy_high"),
            "model_uri": final.model_uri,
        }
        (Path(HydraConfig.get().runtime.output_dir) / JOB_FILE).write_text(json.dumps(found), encoding="utf-8")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        jobs = [json.loads(p.read_text(encoding="utf-8")) for p in Path(config.hydra.sweep.dir).rglob(JOB_FILE)]
        if not jobs:
            return
        best = max(jobs, key=lambda job: job["validation"])
        interval = f" (95% {best['low']:.4f}-{best['high']:.4f})" if best["low"] is not None else ""
        print(
            f"multirun: best job of {len(jobs)}: model={best['model']} study={best['study']} validation accuracy "
            f"{best['validation']:.4f}, test accuracy {best['test_accuracy']:.4f}{interval}, {best['model_uri']}",
            flush=True,
        )
