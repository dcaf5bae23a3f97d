"""`python -m pipeline.predict URI TEXT...`: load a saved model directory or a `models:/` URI, print one label per text."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline import secrets
from pipeline.schema import TrackingConfig


def load(uri: str, tracking_uri: str):
    """A callable mapping texts to labels."""
    if Path(uri).is_dir():
        from transformers import pipeline

        classify = pipeline("text-classification", model=uri, tokenizer=uri)
        return lambda texts: [out["label"] for out in classify(texts)]
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(uri)
    return lambda texts: list(model.predict(texts)["label"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.predict", description=__doc__)
    parser.add_argument("uri", help="saved model directory, or models:/NAME@champion, models:/NAME/VERSION, runs:/...")
    parser.add_argument("texts", nargs="+", metavar="TEXT")
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", TrackingConfig.uri),
        help="MLflow tracking/registry URI for models:/ URIs (default: %(default)s)",
    )
    secrets.guard_process()  # --help prints the default tracking URI, which may hold a password
    args = parser.parse_args(argv)
    try:
        classify = load(args.uri, args.tracking_uri)
    except Exception as err:  # missing model or alias, unreachable registry
        print(f"error: cannot load {args.uri}: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    for label in classify(args.texts):
        print(label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
