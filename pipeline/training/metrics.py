"""A model's scores on labelled rows: accuracy and macro-F1 (each epoch's, in training), and precision,
recall, F1 and support per class (the test split's, and `pipeline.evaluate`'s)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
from transformers import EvalPrediction

PER_CLASS = ("precision", "recall", "f1", "support")
OBJECTIVE = "eval_accuracy"  # what the search maximises, as the Trainer and MLflow name it
TEST_METRIC = "test_accuracy"  # the final model's, once: the champion rule ranks versions by it
F1_METRIC = "test_f1_macro"


@dataclass(frozen=True)
class Scored:
    """One labelled split, scored: the model's classes, and each row's true and predicted label."""

    labels: list[str]
    truth: list[str]
    predicted: list[str]

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """`accuracy`, `f1_macro` and `<precision|recall|f1|support>_<label>`, each name after `prefix`."""
        found = headline(self.truth, self.predicted)
        per_class = precision_recall_fscore_support(self.truth, self.predicted, labels=self.labels, zero_division=0)
        for kind, values in zip(PER_CLASS, per_class):
            found |= {f"{kind}_{metric_name(label)}": float(v) for label, v in zip(self.labels, values)}
        return {prefix + name: value for name, value in found.items()}


def metric_name(label: str) -> str:
    """A label as MLflow accepts it in a metric name (letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^\w\-./ ]", "_", str(label))


def headline(truth, predicted) -> dict[str, float]:
    """`accuracy` and `f1_macro` (the mean of the classes' F1)."""
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "f1_macro": float(f1_score(truth, predicted, average="macro")),
    }


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """The Trainer's evaluation: headline scores of the class ids predicted."""
    return headline(prediction.label_ids, np.argmax(prediction.predictions, axis=-1))
