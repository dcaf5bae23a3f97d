"""A model's scores on labelled rows: accuracy and macro-F1 (each epoch's, in training), and precision,
recall, F1 and support per class (the test split's, and `pipeline.evaluate`'s)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
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
        per_class = _per_class(np.asarray(self.truth), np.asarray(self.predicted), self.labels)
        for kind, values in zip(PER_CLASS, per_class):
            found |= {f"{kind}_{metric_name(label)}": float(v) for label, v in zip(self.labels, values)}
        return {prefix + name: value for name, value in found.items()}


def metric_name(label: str) -> str:
    """A label as MLflow accepts it in a metric name (letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^\w\-./ ]", "_", str(label))


def headline(truth, predicted) -> dict[str, float]:
    """`accuracy` and `f1_macro` (the mean F1 of the classes in either list, as scikit-learn's)."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    f1 = _per_class(truth, predicted, np.union1d(truth, predicted))[2]
    return {"accuracy": float(np.mean(truth == predicted)), "f1_macro": float(np.mean(f1))}


def _per_class(truth: np.ndarray, predicted: np.ndarray, labels) -> tuple[np.ndarray, ...]:
    """Precision, recall, F1 and support of each label; 0 where a ratio has nothing to count. In numpy:
    scikit-learn costs every command half a second of imports for these four lines."""
    labels = np.asarray(labels)
    hits = (truth[None, :] == labels[:, None]) & (predicted[None, :] == labels[:, None])
    true_positive = hits.sum(axis=1)
    support = (truth[None, :] == labels[:, None]).sum(axis=1)
    chosen = (predicted[None, :] == labels[:, None]).sum(axis=1)
    ratio = lambda num, den: np.divide(num, den, out=np.zeros(len(labels)), where=den > 0)  # noqa: E731
    return (
        ratio(true_positive, chosen),
        ratio(true_positive, support),
        ratio(2 * true_positive, chosen + support),
        support,
    )


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """The Trainer's evaluation: headline scores of the class ids predicted."""
    return headline(prediction.label_ids, np.argmax(prediction.predictions, axis=-1))
