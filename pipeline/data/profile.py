"""What the training data looked like, kept with each registered version (label shares, text lengths in
tokens, the unknown-token share, the most common tokens), and how far new rows are from it: rows unlike the
training data may be scored worse than the test split said. Thresholds in docs/uncertainty.md."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

QUANTILES = (5, 25, 50, 75, 95)  # percentiles of the text length, in tokens
TOP_TOKENS = 1000  # the most common tokens kept, with their counts (for a look by hand)
MAX_ROWS = 20_000  # rows profiled; a larger file is sampled
MIN_ROWS = 20  # fewer rows say too little to judge a shift (a text or two typed on the command line)
LENGTH_RATIO = 2.0  # the median length here this many times the training one, or 1/this: far outside
LABEL_POINTS = 0.10  # a label's share moved by at least this (and by 3 standard errors): far outside
UNKNOWN_POINTS = 0.01  # unknown tokens this much more common (and 3x as common) as in training: far outside


@dataclass(frozen=True)
class Profile:
    rows: int
    lengths: dict[str, float]  # percentile -> tokens per text, before truncation
    unknown: float  # the share of tokens the tokenizer does not know (its unknown token)
    labels: dict[str, float]  # label -> share of rows; empty for unlabelled rows
    tokens: dict[str, int]  # the TOP_TOKENS most common tokens and their counts (training only)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, found: dict) -> Profile:
        return cls(**{key: found[key] for key in cls.__dataclass_fields__})


def profile(texts: list[str], labels: list[str] | None, tokenizer, top_tokens: int = TOP_TOKENS) -> Profile:
    """The profile of `texts` (and their `labels`) as `tokenizer` splits them, whole: not truncated. Of a
    fixed sample of MAX_ROWS rows when there are more: the shares and percentiles hardly move, the time does."""
    if len(texts) > MAX_ROWS:
        rows = sorted(random.Random(0).sample(range(len(texts)), MAX_ROWS))
        texts, labels = [texts[i] for i in rows], [labels[i] for i in rows] if labels else labels
    ids = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    lengths = np.array([len(one) for one in ids]) if ids else np.zeros(1)
    counts = Counter(token for one in ids for token in one)
    total = sum(counts.values()) or 1
    unknown = counts.get(tokenizer.unk_token_id, 0) / total if tokenizer.unk_token_id is not None else 0.0
    top = counts.most_common(top_tokens)
    common = {token: n for token, (_, n) in zip(tokenizer.convert_ids_to_tokens([t for t, _ in top]), top)}
    shares = {label: n / len(labels) for label, n in sorted(Counter(labels).items())} if labels else {}
    quantiles = {str(q): float(np.percentile(lengths, q)) for q in QUANTILES}
    return Profile(len(texts), quantiles, unknown, shares, common)


@dataclass(frozen=True)
class Shift:
    """New rows against the training profile: each measure, and the ones far outside it (`far`)."""

    rows: int
    length_ratio: float  # median length here / in training
    median: tuple[float, float]  # (training, here), tokens
    unknown: tuple[float, float]  # (training, here) unknown-token share
    label: tuple[str, float, float] | None  # the label whose share moved most: (label, training, here)
    far: tuple[str, ...]  # each measure far outside the training profile, said in words

    @property
    def judged(self) -> bool:
        """Whether there were rows enough to say anything (MIN_ROWS)."""
        return self.rows >= MIN_ROWS

    def metrics(self) -> dict[str, float]:
        found = {
            "drift_length_ratio": self.length_ratio,
            "drift_unknown_share": self.unknown[1],
            "drift_unknown_share_training": self.unknown[0],
        }
        if self.label is not None:
            found["drift_label_share_change"] = abs(self.label[2] - self.label[1])
        return found

    def line(self, rows: str, consequence: str) -> str:
        """`warning: ROWS are unlike the training data: WHAT IS FAR OUT: CONSEQUENCE` (when `far` says something)."""
        return f"warning: {rows} are unlike the training data: {'; '.join(self.far)}: {consequence}"


def shift(training: Profile, here: Profile) -> Shift:
    """How far `here` is from `training`. Nothing is far out on fewer than MIN_ROWS rows."""
    median = (training.lengths["50"], here.lengths["50"])
    ratio = median[1] / max(median[0], 1.0)
    far = []
    if ratio >= LENGTH_RATIO or ratio <= 1 / LENGTH_RATIO:
        far.append(f"texts {ratio:.1f}x as long (median {median[1]:.0f} tokens, {median[0]:.0f} in training)")
    unknown = (training.unknown, here.unknown)
    if unknown[1] >= unknown[0] + UNKNOWN_POINTS and unknown[1] >= 3 * unknown[0]:
        far.append(f"{unknown[1]:.1%} of tokens unknown to the model's tokenizer ({unknown[0]:.1%} in training)")
    label = None
    if here.labels and training.labels:
        names = sorted(training.labels | here.labels)
        moved = {name: (training.labels.get(name, 0.0), here.labels.get(name, 0.0)) for name in names}
        by_change = sorted(names, key=lambda name: -abs(moved[name][1] - moved[name][0]))  # equal: by name
        label = (by_change[0], *moved[by_change[0]])
        flagged = [name for name in by_change if _label_moved(*moved[name], training.rows, here.rows)]
        if flagged:  # the largest move in words; the others (often its echo in the remaining shares) counted
            before, now = moved[flagged[0]]
            others = f", and {len(flagged) - 1} other labels' shares" if len(flagged) > 1 else ""
            far.append(f"label {flagged[0]!r} on {now:.0%} of rows ({before:.0%} in training){others}")
    judged = here.rows >= MIN_ROWS
    return Shift(here.rows, ratio, median, unknown, label, tuple(far) if judged else ())


def _label_moved(before: float, now: float, rows_before: int, rows_now: int) -> bool:
    """A change in a label's share beyond LABEL_POINTS and beyond 3 standard errors of a difference of two
    shares counted on these rows (a few hundred rows move a share by points by chance)."""
    spread = math.sqrt(before * (1 - before) * (1 / max(rows_before, 1) + 1 / max(rows_now, 1)))
    return abs(now - before) >= max(LABEL_POINTS, 3 * spread)
