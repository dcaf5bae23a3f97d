"""`python -m pipeline.predict URI [TEXT ...] [--input FILE]`: classify texts with a saved model directory or
a `models:/` URI. Texts on the command line print `label<TAB>score`; a file's rows come back in their order
with `label` and `score` (and, with --all-scores, one probability column per class) added."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from pipeline import classifier
from pipeline.data import files
from pipeline.data.profile import profile, shift
from pipeline.errors import PipelineError
from pipeline.runtime import startup


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.predict", description=__doc__)
    parser.add_argument("uri", help="saved model directory, or models:/NAME@champion, models:/NAME/VERSION, runs:/...")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify (or use --input)")
    parser.add_argument("--input", help="a CSV, JSONL, JSON or Parquet file, or - for one text per line on stdin")
    parser.add_argument("--output", help="where the rows go: .csv, .jsonl, .json or .parquet (default: CSV on stdout)")
    parser.add_argument("--all-scores", action="store_true", help="add one probability column per class")
    classifier.add_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return startup.command(arguments(), run, argv)


def run(args: argparse.Namespace) -> None:
    classifier.check_options(args)
    if bool(args.texts) == bool(args.input):
        raise PipelineError("give texts on the command line or --input FILE (one of the two)")
    files.check_output(args.output)
    rows = files.read_rows(args.input) if args.input else None  # a bad file fails before the model loads
    columns = classifier.text_columns(args)
    texts = files.texts_of(rows, columns, f"--input={args.input}") if rows is not None else args.texts
    model = classifier.from_options(args)
    print(f"{args.uri} on {model.where()}", file=sys.stderr)  # stdout carries the rows alone
    warn_on_drift(model, texts, f"the {len(texts)} texts" + (f" of --input={args.input}" if args.input else ""))
    probabilities = model.probabilities(texts, args.batch_size, progress=rows is not None)
    labels, scores = model.label_of(probabilities)
    if rows is None:
        for label, score in zip(labels, scores):
            print(f"{label}\t{score:.4f}")
        return
    files.write_rows(with_predictions(rows, model, probabilities, args.all_scores), args.output)


def warn_on_drift(model: classifier.Classifier, texts: list[str], said: str) -> None:
    """One line on stderr when the texts' lengths or unknown tokens are far outside the training data's."""
    if model.profile is None:  # a directory, or a version from before profiles were kept
        return
    drift = shift(model.profile, profile(texts, None, model.tokenizer, top_tokens=0))
    if drift.far:
        consequence = "predictions may be less accurate than the test accuracy says (docs/uncertainty.md)"
        print(drift.line(said, consequence), file=sys.stderr)


def with_predictions(rows: pd.DataFrame, model: classifier.Classifier, probabilities, all_scores: bool) -> pd.DataFrame:
    """`rows` with the predicted label and its score (prefixed `predicted_` where the input has such columns)."""
    labels, scores = model.label_of(probabilities)
    added = {"label": labels, "score": scores}
    if all_scores:
        added |= {f"score_{label}": probabilities[:, i] for i, label in enumerate(model.labels)}
    clash = set(added) & set(rows.columns)
    return rows.assign(**{(f"predicted_{k}" if clash else k): v for k, v in added.items()})


if __name__ == "__main__":
    sys.exit(main())
