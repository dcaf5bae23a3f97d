"""pipeline/tracking/report.py on in-memory studies: small studies skip what cannot be drawn, never crash."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from pipeline.schema import TrackingConfig
from pipeline.tracking import report
from pipeline.tracking.tracker import Tracker

DISTRIBUTIONS = {
    "per_device_train_batch_size": CategoricalDistribution([8, 16]),
    "num_train_epochs": IntDistribution(1, 3),
}


def trial(value: float | None, batch: int, epochs: int, state=TrialState.COMPLETE, curve=(0.3, 0.5)):
    return create_trial(
        state=state,
        value=value,
        params={"per_device_train_batch_size": batch, "num_train_epochs": epochs},
        distributions=DISTRIBUTIONS,
        intermediate_values=dict(enumerate(curve, 1)),
    )


@pytest.fixture(scope="module")
def tracker(tmp_path_factory) -> Tracker:
    tmp = tmp_path_factory.mktemp("report")  # one store: creating its tables takes seconds
    return Tracker(TrackingConfig(uri=f"sqlite:///{tmp}/mlflow.db", experiment="x", artifact_dir=str(tmp / "a")))


def study_of(*trials) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    return study


def logged(tracker: Tracker, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in tracker.client.list_artifacts(run_id, path)}


def test_one_completed_trial_skips_param_importances_with_a_reason(tracker, caplog):
    run_id = tracker.new_run("study", "study")
    study = study_of(trial(0.5, 8, 2), trial(None, 16, 1, TrialState.PRUNED, curve=(0.2,)))
    with caplog.at_level("INFO", logger="pipeline.tracking.report"):
        made = report.log_study(tracker, run_id, study)
    assert made == ["optimization_history", "parallel_coordinate", "intermediate_values"]
    assert "no param_importances plot: needs 2 completed trials, the study has 1" in caplog.text
    assert "plots/param_importances.png" not in logged(tracker, run_id, "plots")
    assert {report.TRIALS_TABLE, report.BEST_PARAMS} <= logged(tracker, run_id)


def test_a_study_with_varied_results_gets_every_plot(tracker):
    run_id = tracker.new_run("study", "study")
    study = study_of(trial(0.5, 8, 2), trial(0.7, 16, 3), trial(0.6, 8, 3), trial(None, 16, 1, TrialState.PRUNED))
    assert report.log_study(tracker, run_id, study) == list(report.PLOTS)
    assert {f"plots/{n}.{ext}" for n in report.PLOTS for ext in ("html", "png")} == logged(tracker, run_id, "plots")


def test_no_completed_trial_logs_the_table_and_no_plot(tracker):
    run_id = tracker.new_run("study", "study")
    study = study_of(create_trial(state=TrialState.FAIL))
    assert report.log_study(tracker, run_id, study) == []
    table = tracker.client.download_artifacts(run_id, report.TRIALS_TABLE)
    assert open(table).read().splitlines()[1].startswith("0,FAIL,")
