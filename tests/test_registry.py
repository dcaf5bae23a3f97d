"""The champion rule against a real SQLite MLflow registry."""

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


def test_champion_moves_only_to_a_better_model(tracker):
    v1 = add_version(tracker, 0.80)
    assert registry.promote(tracker, "m", "champion") == v1
    add_version(tracker, 0.70)
    assert registry.promote(tracker, "m", "champion") == v1  # worse: stays
    v3 = add_version(tracker, 0.85)
    assert registry.promote(tracker, "m", "champion") == v3
    add_version(tracker, 0.85)
    assert registry.promote(tracker, "m", "champion") == v3  # a tie keeps the holder
    assert tracker.client.get_model_version_by_alias("m", "champion").version == v3


def test_stale_alias_is_corrected(tracker):
    v1, v2 = add_version(tracker, 0.9), add_version(tracker, 0.6)
    tracker.client.set_registered_model_alias("m", "champion", v2)  # e.g. a racing finalize wrote last
    assert registry.promote(tracker, "m", "champion") == v1


def test_versions_scored_on_other_data_refuse_a_new_one(tracker):
    registry.check_data(tracker, "m", "sha256:abc")  # no registered model yet
    add_version(tracker, 0.8)  # from before versions were tagged with their data: cannot tell
    add_version(tracker, 0.75, **{registry.DATA_TAG: "3f2a9c0d1e4b5a67"})  # the path-dependent hash: cannot tell
    add_version(tracker, 0.7, **{registry.DATA_TAG: "sha256:abc"})
    registry.check_data(tracker, "m", "sha256:abc")
    with pytest.raises(PipelineError, match="registry.name=m: version 3 was trained and scored on other data"):
        registry.check_data(tracker, "m", "sha256:xyz")
