"""`torchrun --nproc_per_node=2 -m pipeline mode=train`: DDP on the CPU (gloo); rank 0 alone writes to MLflow."""
import subprocess

from mlflow.tracking import MlflowClient

from pipeline.tracking import ROLE_TAG
from tests.conftest import TINY, pipeline_env


def test_torchrun_trains_one_model_on_two_cpu_processes(tmp_path):
    command = ["torchrun", "--nproc_per_node=2", "-m", "pipeline", *TINY, "mode=train", "trainer.num_train_epochs=2"]
    result = subprocess.run(command, cwd=tmp_path, env=pipeline_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    client = MlflowClient(uri, uri)
    assert [e.name for e in client.search_experiments()] == ["ag_news", "Default"]
    (run,) = client.search_runs([client.get_experiment_by_name("ag_news").experiment_id])
    assert run.data.tags[ROLE_TAG] == "train" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "final_eval_accuracy")] == [1, 2]
    # ~86 training rows at batch 16: 12 optimizer steps for 2 epochs in one process, 6 when 2 ranks split them.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "final_train_loss")] == [5]
    (version,) = client.search_model_versions("name = 'ag_news'")
    assert client.get_model_version_by_alias("ag_news", "champion").version == version.version
