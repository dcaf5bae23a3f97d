"""`torchrun --nproc_per_node=2 -m pipeline mode=train`: DDP on the CPU (gloo); rank 0 alone writes to MLflow."""

import subprocess

import pytest
from mlflow.tracking import MlflowClient

from devtools.commands import pipeline_env, tracking_uri
from pipeline.tracking.tracker import ROLE_TAG
from tests.conftest import champion_by_the_rule
from tests.test_own_csv import command, write_reviews

pytestmark = pytest.mark.slow  # servers, faults, or trainings of 20 s and more


def test_torchrun_run_twice_trains_one_model_on_two_cpu_processes_each_time(tmp_path):
    data = write_reviews(tmp_path / "data" / "reviews.csv")
    work = tmp_path / "project"
    work.mkdir()
    torchrun = [
        "torchrun",
        "--nproc_per_node=2",
        "-m",
        "pipeline",
        *command(data),
        "mode=train",
        "trainer.num_train_epochs=2",
        "trainer.logging_steps=1",
    ]
    uri = tracking_uri(work)
    for attempt in (1, 2):
        result = subprocess.run(torchrun, cwd=work, env=pipeline_env(), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        client = MlflowClient(uri, uri)
        assert [e.name for e in client.search_experiments()] == ["local", "Default"]
        runs = client.search_runs([client.get_experiment_by_name("local").experiment_id])
        assert len(runs) == attempt  # rank 1 wrote nothing
        for run in runs:
            assert run.data.tags[ROLE_TAG] == "train" and run.info.status == "FINISHED"
            assert [m.step for m in client.get_metric_history(run.info.run_id, "final_eval_accuracy")] == [1, 2]
            # 65 training rows at batch 16: 5 optimizer steps per epoch in one process, 3 when 2 ranks split them.
            assert [m.step for m in client.get_metric_history(run.info.run_id, "final_train_loss")] == [
                1,
                2,
                3,
                4,
                5,
                6,
            ]
        versions = client.search_model_versions("name = 'local'")
        assert len(versions) == attempt and len({v.tags["pipeline.data"] for v in versions}) == 1
        champion_by_the_rule(uri, "local")
