"""The model card: what a registered version is, what it was trained and scored on, and how well it does;
the version's description in MLflow, and `model_card.md` in the run's outputs/ directory."""
from __future__ import annotations

from pipeline.prepare import Prepared
from pipeline.provenance import command_line, run_params
from pipeline.scoring import metric_name
from pipeline.secrets import redact


def card(prep: Prepared, params: dict, validation: float | None, metrics: dict[str, float]) -> str:
    """Markdown for a version trained with `params` (validation accuracy `validation`) and scored `metrics`."""
    cfg, described = prep.cfg, run_params(prep.cfg)
    rows = {split: len(ds) for split, ds in prep.tokenized.items()}
    lines = [
        f"# {cfg.registry.name}: text classification",
        "",
        f"Labels: {', '.join(prep.labels)}.",
        "",
        "## Training data",
        f"- dataset `{cfg.dataset.name}` from `{described['data_source']}`; rows: "
        + ", ".join(f"{split} {n}" for split, n in rows.items()),
        f"- content fingerprint `{prep.data_fingerprint}`; texts truncated at {cfg.dataset.max_length} tokens",
        "",
        "## Model",
        f"- base model `{cfg.model.name}` (`{described['model_source']}`)",
        "- hyperparameters: " + (", ".join(f"{k}={_short(v)}" for k, v in params.items()) or "conf/trainer's values"),
        "",
        "## Scores",
        (f"- validation accuracy {validation:.4f}; " if validation is not None else "- ")
        + f"test accuracy {metrics['test_accuracy']:.4f}, macro-F1 {metrics['test_f1_macro']:.4f}",
        "",
        "| label | precision | recall | F1 | support |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label in prep.labels:
        name = metric_name(label)
        values = [metrics[f"test_{kind}_{name}"] for kind in ("precision", "recall", "f1")]
        lines.append(f"| {label} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {int(metrics[f'test_support_{name}'])} |")
    lines += [
        "",
        "## Made by",
        f"`{redact(command_line())}`",
        "",
        "## Limits",
        f"- scored once on {rows.get('test', 0)} test rows: differences of a point or less between versions may be noise",
        f"- knows only the labels above, and texts like its training data; longer texts are cut at {cfg.dataset.max_length} tokens",
    ]
    return "\n".join(lines) + "\n"


def _short(value) -> str:
    """A searched float as a person writes it (5.94e-05, not 5.944851968698904e-05)."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)
