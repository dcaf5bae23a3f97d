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
# A score's 95% interval: `<name>_low` and `<name>_high` beside it, and the rows it was counted on.
INTERVALS = ("accuracy_low", "accuracy_high", "f1_macro_low", "f1_macro_high", "rows")
Z_95 = 1.959964  # the normal quantile of a two-sided 95% interval
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0  # the same rows give the same interval


@dataclass(frozen=True)
class Scored:
    """One labelled split, scored: the model's classes, and each row's true and predicted label."""

    labels: list[str]
    truth: list[str]
    predicted: list[str]

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """`accuracy`, `f1_macro` and `<precision|recall|f1|support>_<label>`, each name after `prefix`."""
        found = headline(self.truth, self.predicted) | intervals(self.truth, self.predicted)
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


def intervals(truth, predicted) -> dict[str, float]:
    """95% intervals: accuracy's Wilson score interval (right near 0 and 1 and on few rows, where the normal
    approximation is not), macro-F1's percentile bootstrap over rows (seeded)."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    low, high = wilson(int(np.sum(truth == predicted)), len(truth))
    f1_low, f1_high = bootstrap_f1_macro(truth, predicted)
    return {
        "accuracy_low": low,
        "accuracy_high": high,
        "f1_macro_low": f1_low,
        "f1_macro_high": f1_high,
        "rows": float(len(truth)),
    }


def wilson(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `successes / n`."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def bootstrap_f1_macro(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of macro-F1 over `BOOTSTRAP_RESAMPLES` resamples of the rows. A row
    counts only through its (true, predicted) pair, so a resample is one multinomial draw over the confusion
    matrix's cells: the same distribution as drawing rows, at the cost of K*K cells instead of n rows."""
    labels, truth_ids = np.unique(np.concatenate([truth, predicted]), return_inverse=True)
    k, n = len(labels), len(truth)
    cells = np.bincount(truth_ids[:n] * k + truth_ids[n:], minlength=k * k)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws = rng.multinomial(n, cells / n, size=BOOTSTRAP_RESAMPLES).reshape(-1, k, k)  # [resample, true, predicted]
    tp = np.diagonal(draws, axis1=1, axis2=2)
    counted = draws.sum(axis=2) + draws.sum(axis=1)  # support + times predicted
    f1 = np.divide(2 * tp, counted, out=np.zeros(tp.shape), where=counted > 0)
    low, high = np.percentile(f1.mean(axis=1), [2.5, 97.5])
    return float(low), float(high)


def said(metrics: dict[str, float], prefix: str = "test_") -> str:
    """`accuracy 0.8450 (95% 0.7890-0.8890, 200 rows), f1 macro 0.8434 (0.7880-0.8880)`; without the
    intervals where `metrics` has none (a version registered before they were recorded)."""

    def value(name: str) -> str:
        found = f"{metrics[prefix + name]:.4f}"
        if prefix + name + "_low" in metrics:
            rows = f", {int(metrics[prefix + 'rows']):,} rows" if name == "accuracy" else ""
            found += f" ({'95% ' if name == 'accuracy' else ''}{metrics[prefix + name + '_low']:.4f}-"
            found += f"{metrics[prefix + name + '_high']:.4f}{rows})"
        return found

    return f"accuracy {value('accuracy')}, f1 macro {value('f1_macro')}"


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
