"""A Hydra multirun's last line: its best job by validation accuracy (never by test), with its test score.
Hydra makes this callback before every run, so it stays light: it imports nothing of the pipeline's."""

from __future__ import annotations

import logging
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class BestJob(Callback):
    """Collects each finished job's registered model (jobs of the basic launcher run in this process)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, str, Any]] = []

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        final = job_return.return_value if job_return.status == JobStatus.COMPLETED else None
        if final is not None and final.validation is not None:
            self.jobs.append((config.model.name, config.search.study_name, final))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.jobs:
            return
        model, study_name, final = max(self.jobs, key=lambda job: job[2].validation)
        low, high = (final.metrics.get(f"test_accuracy_{end}") for end in ("low", "high"))
        interval = f" (95% {low:.4f}-{high:.4f})" if low is not None else ""  # none from a version of before
        print(
            f"multirun: best job of {len(self.jobs)}: model={model} study={study_name} validation accuracy "
            f"{final.validation:.4f}, test accuracy {final.test_accuracy:.4f}{interval}, {final.model_uri}",
            flush=True,
        )
