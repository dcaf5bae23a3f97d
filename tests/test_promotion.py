"""The champion rule against a real SQLite MLflow registry: versions whose answers on the same test rows are
crafted row by row and logged to their runs as the final step logs them, then ranked by the real rule."""

import re
import threading

import pandas as pd
import pytest

from pipeline import predict
from pipeline.schema import Promotion, RegistryConfig, TrackingConfig
from pipeline.tracking.promotion import (
    BASELINE_P_TAG,
    BASELINE_TAG,
    DECISION_TAG,
    PREDICTIONS_TAG,
    Answers,
    Rule,
    against_majority,
    baseline_line,
    compare,
    decision_line,
    exact_mcnemar,
    predictions_path,
    row_ids,
)
from pipeline.tracking.registry import baseline_from_tags
from pipeline.tracking.tracker import Tracker
from pipeline.training.metrics import TEST_METRIC
from tests.conftest import mlflow_client, run_entry_point_said, tracking_uri

N = 200
TRUTH = ["spam" if i % 4 == 0 else "ham" for i in range(N)]
ROWS = row_ids([f"message {i}" for i in range(N)])
SIGNIFICANT = RegistryConfig(name="m")


def answers(right: set[int]) -> Answers:
    """Right on the rows in `right`, wrong on the others."""
    other = {"spam": "ham", "ham": "spam"}
    predicted = [t if i in right else other[t] for i, t in enumerate(TRUTH)]
    return Answers(ROWS, TRUTH, predicted, [0.9] * N)


@pytest.fixture
def tracker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = Tracker(TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="e"))
    found.client.create_registered_model("m")
    return found


def add_version(
    tracker: Tracker, found: Answers | None, accuracy: float | None = None, name: str = "m", **tags: str
) -> str:
    """A version as the final step registers one: its run holds its answers (None: a version from before
    they were kept), its tags its test accuracy."""
    run_id = tracker.client.create_run(tracker.experiment_id).info.run_id
    if found is not None:
        tags = {PREDICTIONS_TAG: f"test_predictions/{run_id}.csv", **tags}
        tracker.client.log_text(run_id, found.to_csv(), tags[PREDICTIONS_TAG])
        accuracy = sum(found.right().values()) / N
    tags = {TEST_METRIC: str(accuracy), **tags}
    return tracker.client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags=tags).version


def test_the_exact_test_counts_as_by_hand():
    assert exact_mcnemar(0, 0) == 1.0  # nothing separates them
    assert exact_mcnemar(5, 0) == 1 / 32
    assert exact_mcnemar(6, 2) == (28 + 8 + 1) / 256  # C(8,6) + C(8,7) + C(8,8) of 2^8
    assert exact_mcnemar(10, 2) == (66 + 12 + 1) / 4096
    assert exact_mcnemar(0, 5) == 1.0
    assert exact_mcnemar(2, 2) == 11 / 16


def test_rows_pair_up_by_content_in_any_order_and_repeats_are_numbered():
    ids = row_ids(["a", "b", "a"])
    assert ids[0] != ids[1] and ids[2] == f"{ids[0]}#2"
    first = answers(set(range(150)))
    shuffled = Answers(*(list(reversed(column)) for column in (first.rows, first.truth, first.predicted, first.scores)))
    assert Answers.from_csv(shuffled.to_csv()) == shuffled
    found = compare(answers(set(range(160))), shuffled)
    assert (found.rows, found.new_alone, found.old_alone) == (N, 10, 0)
    assert compare(first, Answers(ROWS[:-1], TRUTH[:-1], TRUTH[:-1], [1.0] * (N - 1))) is None  # other rows


def test_a_few_rows_better_stays_and_clearly_better_moves(tracker):
    v1 = add_version(tracker, answers(set(range(160))))
    assert Rule(tracker, SIGNIFICANT).promote(v1).champion == v1
    # 6 rows right that version 1 got wrong, 2 wrong that it got right: +2 points, p = 37/256.
    v2 = add_version(tracker, answers(set(range(158)) | set(range(160, 166))))
    decision = Rule(tracker, SIGNIFICANT).promote(v2)
    assert decision.champion == v1
    assert (decision.step.comparison.new_alone, decision.step.comparison.old_alone) == (6, 2)
    assert decision_line(v2, decision, SIGNIFICANT) == (
        "version 2: +2.0 points over version 1 on the same 200 rows (p=0.14): champion stays version 1 "
        "(registry.promotion=better moves on any gain)"
    )
    v3 = add_version(tracker, answers(set(range(180))))  # 20 rows more than version 1, none fewer
    decision = Rule(tracker, SIGNIFICANT).promote(v3)
    assert decision.champion == v3 == tracker.client.get_model_version_by_alias("m", "champion").version
    assert decision.step.against == v1 and decision.step.comparison.p_value == 0.5**20
    assert decision_line(v3, decision, SIGNIFICANT) == (
        "version 3: +10.0 points over version 1 on the same 200 rows (p=9.5e-07): champion is now version 3"
    )
    v4 = add_version(tracker, answers(set(range(170))))
    line = decision_line(v4, Rule(tracker, SIGNIFICANT).promote(v4), SIGNIFICANT)
    assert line == "version 4: -5.0 points over version 3 on the same 200 rows (p=1): champion stays version 3"


def test_better_moves_on_any_gain(tracker):
    better = RegistryConfig(name="m", promotion=Promotion.better)
    v1 = add_version(tracker, answers(set(range(160))))
    v2 = add_version(tracker, answers(set(range(158)) | set(range(160, 166))))
    decision = Rule(tracker, better).promote(v2)
    assert decision.champion == v2 and decision.step.comparison is None
    assert decision_line(v2, decision, better) == "version 2: +2.0 points over version 1: champion is now version 2"
    v3 = add_version(tracker, answers(set(range(164))))
    assert Rule(tracker, better).promote(v3).champion == v2  # a tie keeps the holder
    assert tracker.client.get_model_version_by_alias("m", "champion").version == v2 != v1


def test_a_version_from_before_answers_were_kept_is_compared_by_accuracy(tracker):
    v1 = add_version(tracker, None, accuracy=0.80)
    v2 = add_version(tracker, answers(set(range(162))))  # 0.81
    decision = Rule(tracker, SIGNIFICANT).promote(v2)
    assert decision.champion == v2 and decision.step.comparison is None
    assert decision_line(v2, decision, SIGNIFICANT) == (
        f"version 2: +1.0 points over version {v1} (version 1 has no per-row test answers: compared by accuracy): "
        "champion is now version 2"
    )


def test_a_model_no_better_than_the_majority_class_never_holds_the_alias(tracker):
    always_ham = Answers(ROWS, TRUTH, ["ham"] * N, [0.7] * N)
    found = against_majority(always_ham, "ham")
    assert (found.new_alone, found.old_alone, found.p_value) == (0, 0, 1.0)
    line = baseline_line(found, "ham", 0.05)
    assert line == "no better than answering 'ham' on every row (+0.0 points over it on 200 test rows, p=1): " + (
        "it will not become the champion"
    )
    clearly = against_majority(answers(set(range(190))), "ham")  # right on 48 spam rows of 50, wrong on 8 ham rows
    assert baseline_line(clearly, "ham", 0.05) is None and (clearly.new_alone, clearly.old_alone) == (48, 8)
    v1 = add_version(tracker, always_ham, **{BASELINE_TAG: "false"})
    decision = Rule(tracker, SIGNIFICANT).promote(v1)
    assert decision.champion is None
    assert decision_line(v1, decision, SIGNIFICANT, line).endswith("(no version holds champion)")
    v2 = add_version(tracker, answers(set(range(155))), **{BASELINE_TAG: "true"})  # 0.775
    assert Rule(tracker, SIGNIFICANT).promote(v2).champion == v2
    v3 = add_version(tracker, answers(set(range(200))), **{BASELINE_TAG: "false"})  # tagged so: never eligible
    assert Rule(tracker, SIGNIFICANT).promote(v3).champion == v2


def test_an_alias_moved_by_hand_is_where_the_rule_goes_on_from(tracker):
    v1 = add_version(tracker, answers(set(range(150))))
    v2 = add_version(tracker, answers(set(range(190))))
    tracker.client.set_registered_model_alias("m", "champion", v2)
    v3 = add_version(tracker, answers(set(range(185))))
    decision = Rule(tracker, SIGNIFICANT).promote(v3)
    assert decision.champion == v2 and decision.step.against == v2 != v1


def test_racing_registrations_end_on_the_champion_of_their_order(tmp_path):
    """Three rounds of three finalize steps at the same instant, each with its own client, on a new store: the
    alias ends where the rule, applied one version at a time in their order, puts it."""
    rights = [set(range(150)), set(range(150)) | set(range(160, 175)), set(range(158))]
    for round_ in range(3):
        uri = f"sqlite:///{tmp_path}/round{round_}.db"
        setup = Tracker(TrackingConfig(uri=uri, experiment="e"))
        setup.client.create_registered_model("m")
        barrier, champions, errors = threading.Barrier(len(rights)), [], []

        def finalize(right: set[int]) -> None:
            tracker = Tracker(TrackingConfig(uri=uri, experiment="e"))
            try:
                barrier.wait(timeout=60)
                champions.append(Rule(tracker, SIGNIFICANT).promote(add_version(tracker, answers(right))).champion)
            except Exception as err:  # noqa: BLE001 -- reported below, with the round
                errors.append(err)

        threads = [threading.Thread(target=finalize, args=(right,)) for right in rights]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, (round_, errors)
        versions = sorted(setup.client.search_model_versions("name = 'm'"), key=lambda v: int(v.version))
        expected, _ = Rule(setup, SIGNIFICANT).fold(None, versions)
        assert setup.client.get_model_version_by_alias("m", "champion").version == expected.version
        assert len(versions) == 3 and None not in champions


def test_a_model_that_answers_one_class_everywhere_is_called_so_and_not_champion(tmp_path, monkeypatch, capsys):
    """`model=tiny`, one epoch, on data where 9 rows of 10 are `ham`: it answers `ham` everywhere."""
    rows = [
        (f"note {i} " + ("win cash" if i % 10 == 0 else "see you"), "spam" if i % 10 == 0 else "ham")
        for i in range(150)
    ]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "notes.csv", index=False)
    command = ["dataset=local", f"dataset.train_file={tmp_path / 'notes.csv'}", "model=tiny", "mode=train"]
    code, out, err = run_entry_point_said(monkeypatch, capsys, tmp_path, *command, "trainer.num_train_epochs=1")
    assert code == 0, err[-3000:]
    said = "no better than answering 'ham' on every row (+0.0 points over it on 30 test rows, p=1)"
    assert re.search(rf"registry +. version 1: {re.escape(said)}: it will not become the champion \(no version", out)
    assert "(no champion)" in out and "models:/local@champion" not in out, out  # next commands name version 1
    client = mlflow_client(tmp_path)
    (version,) = client.search_model_versions("name = 'local'")
    assert (version.tags[BASELINE_TAG], version.tags[BASELINE_P_TAG]) == ("false", "1")
    assert said in version.tags[DECISION_TAG] and said in version.description
    assert not client.get_registered_model("local").aliases
    run = client.get_run(version.run_id)
    assert run.data.tags[DECISION_TAG] == version.tags[DECISION_TAG]
    (card,) = tmp_path.glob("outputs/**/model_card.md")
    assert "against answering 'ham' (the training split's most common label) on every test row: +0.0 points, p=1" in (
        card.read_text()
    )
    # The alias in a command: one line naming the version to use instead.
    assert predict.main(["models:/local@champion", "win cash", "--tracking-uri", tracking_uri(tmp_path)]) == 2
    assert capsys.readouterr().err.endswith(
        "alias champion not found; no version of local holds champion (a version takes it only when it beats the "
        "majority class and the version holding it: docs/uncertainty.md); use models:/local/1\n"
    )


def test_a_rerun_says_the_baseline_p_value_as_the_final_step_did(tracker):
    add_version(tracker, answers(set(range(150))), **{BASELINE_TAG: "false", BASELINE_P_TAG: "0.756575"})
    (version,) = tracker.client.search_model_versions("name = 'm'")
    assert baseline_from_tags(version) == (
        "no better than the training split's majority class (p=0.76): it will not become the champion"
    )


def test_versions_registered_from_one_run_are_compared_on_their_own_answers(tracker):
    """A study's parent run registers every version its reruns find: each keeps its own answers file (they
    once shared one, so the second compared with itself: `+3.5 points ... (p=1)`)."""
    run_id = tracker.client.create_run(tracker.experiment_id).info.run_id
    versions = []
    for model_id, right in (("m-first", set(range(150))), ("m-second", set(range(175)))):
        path = predictions_path(model_id)
        tracker.client.log_text(run_id, answers(right).to_csv(), path)
        tags = {TEST_METRIC: str(len(right) / N), PREDICTIONS_TAG: path}
        versions.append(tracker.client.create_model_version("m", f"runs:/{run_id}/model", run_id=run_id, tags=tags))
    decision = Rule(tracker, SIGNIFICANT).promote(versions[1].version)
    assert decision.champion == versions[1].version
    assert (decision.step.comparison.new_alone, decision.step.comparison.old_alone) == (25, 0)
