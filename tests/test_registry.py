"""The registry's data check against a real SQLite MLflow registry (the champion rule: test_promotion.py)."""

import pytest

from pipeline.errors import PipelineError
from pipeline.schema import TrackingConfig
from pipeline.tracking import registry
from pipeline.tracking.tracker import Tracker


@pytest.fixture
def tracker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return Tracker(TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="e"))


def add_version(tracker, accuracy: float, **tags: str) -> str:
    if not tracker.client.search_registered_models("name = 'm'"):
        tracker.client.create_registered_model("m")
    tags = {registry.TEST_METRIC: str(accuracy), **tags}
    return tracker.client.create_model_version("m", "file:///nowhere", tags=tags).version


def test_versions_scored_on_other_data_refuse_a_new_one(tracker):
    registry.check_data(tracker, "m", "sha256:abc")  # no registered model yet
    add_version(tracker, 0.8)  # from before versions were tagged with their data: cannot tell
    add_version(tracker, 0.75, **{registry.DATA_TAG: "3f2a9c0d1e4b5a67"})  # the path-dependent hash: cannot tell
    add_version(tracker, 0.7, **{registry.DATA_TAG: "sha256:abc"})
    registry.check_data(tracker, "m", "sha256:abc")
    with pytest.raises(PipelineError, match="registry.name=m: version 3 was trained and scored on other data"):
        registry.check_data(tracker, "m", "sha256:xyz")


def test_the_default_relative_store_follows_the_directory_each_tracker_opens_in(tmp_path, monkeypatch):
    """Two projects in one process (a notebook, an in-process test): MLflow caches one store per URL string,
    so `sqlite:///mlruns/mlflow.db` once wrote the second project's versions into the first's database."""
    for project in ("one", "two"):
        (tmp_path / project).mkdir()
        monkeypatch.chdir(tmp_path / project)
        tracker = Tracker(TrackingConfig(uri="sqlite:///mlruns/mlflow.db", experiment="e"))
        add_version(tracker, 0.5)
    for project in ("one", "two"):
        seen = Tracker(TrackingConfig(uri=f"sqlite:///{tmp_path / project}/mlruns/mlflow.db", experiment="e"))
        assert [v.version for v in seen.client.search_model_versions("name = 'm'")] == [1], project
