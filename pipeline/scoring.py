"""A model's scores on labelled rows: accuracy, macro-F1, and precision, recall, F1 and support per class."""
from __future__ import annotations

import re
from dataclasses import dataclass

from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support


PER_CLASS = ("precision", "recall", "f1", "support")


@dataclass(frozen=True)
class Scored:
    """One labelled split, scored: the model's classes, and each row's true and predicted label."""

    labels: list[str]
    truth: list[str]
    predicted: list[str]

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """`accuracy`, `f1_macro` and `<precision|recall|f1|support>_<label>`, each name after `prefix`."""
        found = {
            "accuracy": float(accuracy_score(self.truth, self.predicted)),
            "f1_macro": float(f1_score(self.truth, self.predicted, average="macro")),
        }
        per_class = precision_recall_fscore_support(self.truth, self.predicted, labels=self.labels, zero_division=0)
        for kind, values in zip(PER_CLASS, per_class):
            found |= {f"{kind}_{metric_name(label)}": float(v) for label, v in zip(self.labels, values)}
        return {prefix + name: value for name, value in found.items()}


def metric_name(label: str) -> str:
    """A label as MLflow accepts it in a metric name (letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^\w\-./ ]", "_", str(label))
