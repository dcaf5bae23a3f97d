"""The champion rule: which registered version holds the alias, and why.

Each version keeps its answers on the test split (`test_predictions/<model id>.csv` on its run: each row's identity,
label, predicted label, score), so two versions scored on the same rows are compared row by row without
reloading either. `registry.promotion=significant` moves the alias to a newer version only when it gets
significantly more rows right than the holder (a one-sided exact McNemar test at `registry.alpha`);
`better` moves it on any gain in test accuracy. A version not significantly better than answering the
training split's majority class on every row never takes the alias."""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections import Counter
from dataclasses import dataclass

import mlflow
from mlflow.entities.model_registry import ModelVersion

from pipeline.schema import Promotion, RegistryConfig
from pipeline.tracking.internals import duplicate_key
from pipeline.tracking.tracker import Tracker, artifact_text
from pipeline.training.metrics import TEST_METRIC

# Each version's answers: an artifact of its run, one file per logged model (a run that registers twice, as a
# study's parent run does, keeps both), named on the version by this tag.
PREDICTIONS_TAG = "pipeline.test_predictions"
COLUMNS = ("row", "label", "predicted", "score")
BASELINE_TAG = "pipeline.beats_baseline"  # "false": no better than the majority class; never the champion
BASELINE_P_TAG = "pipeline.baseline_p_value"
DECISION_TAG = "pipeline.promotion"  # the line said when the version was registered
# Its comparison with the holder: the version compared with, the p-value, the rows each got right alone.
COMPARISON_TAGS = ("pipeline.compared_with", "pipeline.p_value", "pipeline.right_alone", "pipeline.holder_right_alone")


@dataclass(frozen=True)
class Answers:
    """A model's answers on the test split, row by row. A row is named by its text's hash (numbered among
    equal texts), so two versions' rows pair up without the texts being stored."""

    rows: list[str]
    truth: list[str]
    predicted: list[str]
    scores: list[float]

    def right(self) -> dict[str, bool]:
        return {row: t == p for row, t, p in zip(self.rows, self.truth, self.predicted)}

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        writer.writerows(zip(self.rows, self.truth, self.predicted, (f"{s:.6f}" for s in self.scores)))
        return out.getvalue()

    @classmethod
    def from_csv(cls, text: str) -> Answers:
        rows = list(csv.DictReader(io.StringIO(text)))
        return cls(*([r[c] for r in rows] for c in COLUMNS[:3]), [float(r["score"]) for r in rows])


@dataclass(frozen=True)
class Comparison:
    """Two models' answers on the same rows: how many each got right where the other did not, and the
    chance of the newer being that far ahead if both were equally good (one-sided exact McNemar test)."""

    rows: int
    new_alone: int
    old_alone: int

    @property
    def p_value(self) -> float:
        return exact_mcnemar(self.new_alone, self.old_alone)

    @property
    def points(self) -> float:
        """The newer's gain in accuracy, in percentage points."""
        return 100 * (self.new_alone - self.old_alone) / self.rows if self.rows else 0.0


def exact_mcnemar(new_alone: int, old_alone: int) -> float:
    """P(at least `new_alone` of the rows where exactly one model is right go to the newer), each row a fair
    coin: 1.0 when no row separates them. Exact (integer arithmetic), as the normal approximation is not on
    few discordant rows."""
    n = new_alone + old_alone
    return sum(math.comb(n, k) for k in range(new_alone, n + 1)) / 2**n


def compare(new: Answers, old: Answers) -> Comparison | None:
    """`new` against `old` row by row; None when they were not scored on the same rows."""
    new_right, old_right = new.right(), old.right()
    if new_right.keys() != old_right.keys():
        return None
    new_alone = sum(right and not old_right[row] for row, right in new_right.items())
    old_alone = sum(right and not new_right[row] for row, right in old_right.items())
    return Comparison(len(new_right), new_alone, old_alone)


def against_majority(answers: Answers, majority: str) -> Comparison:
    """`answers` against the baseline that answers `majority` (the training split's most common class) on
    every row."""
    baseline = Answers(answers.rows, answers.truth, [majority] * len(answers.rows), [1.0] * len(answers.rows))
    return compare(answers, baseline)


def baseline_line(found: Comparison, majority: str, alpha: float) -> str | None:
    """One line when a model is not significantly better than the majority class; None when it is."""
    if found.p_value < alpha:
        return None
    return (
        f"no better than answering {majority!r} on every row ({found.points:+.1f} points over it on "
        f"{found.rows:,} test rows, p={found.p_value:.2g}): it will not become the champion"
    )


def row_ids(texts: list[str]) -> list[str]:
    """Each text's row name: the first 16 hex digits of its SHA-256, `#2`, `#3` ... on repeats."""
    seen: Counter[str] = Counter()
    names = []
    for text in texts:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        seen[digest] += 1
        names.append(digest if seen[digest] == 1 else f"{digest}#{seen[digest]}")
    return names


@dataclass(frozen=True)
class Step:
    """The rule applied to one version: the champion it met, what they compared, whether it took the alias."""

    version: str
    against: str
    moved: bool
    comparison: Comparison | None  # None: compared by accuracy (`better`, or a side without its answers)
    points: float  # test accuracy gain over `against`, in points


@dataclass(frozen=True)
class Decision:
    champion: str | None  # the version holding the alias after the rule (None: no version may hold it)
    step: Step | None  # the registered version's own step, when the rule reached it


class Rule:
    """The champion rule over one registered model's versions, reading each version's answers once."""

    def __init__(self, tracker: Tracker, cfg: RegistryConfig) -> None:
        self.tracker, self.cfg = tracker, cfg
        self.answers: dict[str, Answers | None] = {}

    def promote(self, version: str | None = None) -> Decision:
        """Point the alias at the champion, and return it and `version`'s step.

        From the holder, each newer eligible version in order takes the alias when it beats the one holding it
        then: a function of the versions alone, so racing finalize commands agree. Each re-reads after
        writing (or failing to) until what it reads is consistent."""
        client, name, alias = self.tracker.client, self.cfg.name, self.cfg.alias
        step = None
        for _ in range(20):
            versions = sorted(
                (v for v in client.search_model_versions(f"name = '{name}'") if TEST_METRIC in v.tags),
                key=lambda v: int(v.version),
            )
            holder = alias_holder(self.tracker, name, alias)
            champion, steps = self.fold(holder, versions)
            step = next((s for s in steps if s.version == version), step)
            if champion is None or champion.version == holder:
                return Decision(holder, step)
            try:
                client.set_registered_model_alias(name, alias, champion.version)
            except mlflow.exceptions.MlflowException as err:
                # MLflow's store reads then inserts: when another finalize created the alias in between, this
                # insert is a duplicate key. Read again; the next round decides as if it had come first.
                if not duplicate_key(err):
                    raise
        raise RuntimeError(f"registry: alias {alias!r} of {name!r} did not settle")

    def fold(self, holder: str | None, versions: list[ModelVersion]) -> tuple[ModelVersion | None, list[Step]]:
        eligible = [v for v in versions if v.tags.get(BASELINE_TAG) != "false"]
        champion = next((v for v in versions if v.version == holder), None)
        if champion is None:
            if not eligible:
                return None, []
            champion, eligible = eligible[0], eligible[1:]
        steps = []
        for newer in (v for v in eligible if int(v.version) > int(champion.version)):
            step = self.step(newer, champion)
            steps.append(step)
            champion = newer if step.moved else champion
        return champion, steps

    def step(self, new: ModelVersion, old: ModelVersion) -> Step:
        points = 100 * (float(new.tags[TEST_METRIC]) - float(old.tags[TEST_METRIC]))
        comparison = None
        if self.cfg.promotion == Promotion.significant:
            new_answers, old_answers = self.read(new), self.read(old)
            if new_answers is not None and old_answers is not None:
                comparison = compare(new_answers, old_answers)
        moved = comparison.p_value < self.cfg.alpha if comparison is not None else points > 0
        return Step(new.version, old.version, moved, comparison, points)

    def read(self, version: ModelVersion) -> Answers | None:
        """A version's answers, from its run (None for a version registered before they were kept)."""
        if version.version not in self.answers:
            self.answers[version.version] = read_answers(
                self.tracker, version.run_id, version.tags.get(PREDICTIONS_TAG)
            )
        return self.answers[version.version]


def alias_holder(tracker: Tracker, name: str, alias: str) -> str | None:
    try:
        return tracker.client.get_model_version_by_alias(name, alias).version
    except mlflow.exceptions.MlflowException:
        return None


def predictions_path(model_id: str) -> str:
    """Where, in its run, the version registered from logged model `model_id` keeps its answers."""
    return f"test_predictions/{model_id}.csv"


def read_answers(tracker: Tracker, run_id: str | None, artifact: str | None) -> Answers | None:
    # Listed first, so that a store that fails mid-download raises rather than passing for "no answers".
    if not run_id or not artifact:
        return None
    if artifact not in {a.path for a in tracker.client.list_artifacts(run_id, artifact.rsplit("/", 1)[0])}:
        return None
    return Answers.from_csv(artifact_text(tracker.client, run_id, artifact))


def decision_line(version: str, decision: Decision, cfg: RegistryConfig, baseline: str | None = None) -> str:
    """Why `version` holds the alias or not, in one line (said at the end of the final step, kept as a tag);
    `baseline` is `baseline_line`'s, for a version no better than the majority class."""
    step, alias, champion = decision.step, cfg.alias, decision.champion
    held = f"{alias} is version {champion}" if champion else f"no version holds {alias}"
    if baseline is not None:
        return f"version {version}: {baseline} ({held})"
    if step is None:
        return f"version {version}: {held}"
    gain = f"{step.points:+.1f} points over version {step.against}"
    found = step.comparison
    if found is not None:
        gain += f" on the same {found.rows:,} rows (p={found.p_value:.2g})"
    elif cfg.promotion == Promotion.significant:
        gain += f" (version {step.against} has no per-row test answers: compared by accuracy)"
    if step.moved:
        return f"version {version}: {gain}: {alias} is now version {version}"
    hint = " (registry.promotion=better moves on any gain)" if found is not None and step.points > 0 else ""
    return f"version {version}: {gain}: {alias} stays version {champion}{hint}"


def decision_tags(decision: Decision, line: str) -> dict[str, str]:
    tags = {DECISION_TAG: line}
    step = decision.step
    if step is not None and step.comparison is not None:
        found = step.comparison
        values = (step.against, f"{found.p_value:.6g}", str(found.new_alone), str(found.old_alone))
        tags |= dict(zip(COMPARISON_TAGS, values))
    return tags
