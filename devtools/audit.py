"""Do Optuna and MLflow tell the same story about a study? For the tests and benchmarks/soak.py."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from pipeline.tracking.tracker import (
    INTERRUPTED,
    RESUMED,
    ROLE_TAG,
    STATE_TAG,
    STUDY_TAG,
    TRIAL_END,
    TRIAL_TAG,
)

# An ended Optuna trial -> the state tags its MLflow run may carry.
_RUN_STATES = {
    state: {tag} | ({INTERRUPTED[1], RESUMED[1]} if state == TrialState.FAIL else set())
    for state, (_, tag) in TRIAL_END.items()
}


@dataclass
class Audit:
    trials: Counter = field(default_factory=Counter)  # Optuna state name -> trials
    trial_runs: Counter = field(default_factory=Counter)  # MLflow pipeline.state tag -> trial runs
    running_runs: list[str] = field(default_factory=list)  # MLflow runs (study or trial) still RUNNING
    disagreements: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        """Every ended trial has exactly one run in the matching state, and nothing is left RUNNING."""
        return not self.disagreements and not self.running_runs and self.trials["RUNNING"] == 0

    def summary(self) -> str:
        return (
            f"optuna trials {dict(sorted(self.trials.items()))}; mlflow trial runs "
            f"{dict(sorted(self.trial_runs.items()))}; "
            f"runs RUNNING: {len(self.running_runs)}; disagreements: {len(self.disagreements)}"
        )


def audit(study: optuna.Study, client: MlflowClient, experiment: str) -> Audit:
    result = Audit(trials=Counter(t.state.name for t in study.trials))
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], f"tags.`{STUDY_TAG}` = '{study.study_name}'", max_results=50000)
    result.running_runs = [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    by_trial: dict[int, list] = {}
    for run in runs:
        if run.data.tags.get(ROLE_TAG) == "trial":
            by_trial.setdefault(int(run.data.tags[TRIAL_TAG]), []).append(run)
            result.trial_runs[run.data.tags.get(STATE_TAG, "none")] += 1
    for trial in study.trials:
        found = by_trial.pop(trial.number, [])
        if trial.state not in _RUN_STATES:
            continue  # RUNNING or WAITING: its run may not exist yet
        states = [r.data.tags.get(STATE_TAG) for r in found]
        if len(found) != 1 or states[0] not in _RUN_STATES[trial.state]:
            result.disagreements.append(f"trial {trial.number} {trial.state.name}: runs in states {states}")
    result.disagreements += [f"run for unknown trial {number}" for number in by_trial]
    return result
