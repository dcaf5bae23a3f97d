"""What the after-search commands (`pipeline.predict`, `pipeline.evaluate`) share: their common options,
and bad input as one `error:` line with exit code 2."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from pipeline import classifier, interrupts, secrets
from pipeline.errors import PipelineError
from pipeline.schema import TrackingConfig


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-columns", default="text", help="the file's text columns, joined with a space (default: text)")
    parser.add_argument("--batch-size", type=int, default=classifier.BATCH_SIZE, help="texts per batch (default: %(default)s)")
    parser.add_argument("--device", default="auto", help=(
        "where the model runs: auto (a CUDA GPU where torch sees one, else the CPU), cpu or cuda; "
        "bf16 where the device has it (default: %(default)s)"))
    parser.add_argument("--quantize", action="store_true", help=(
        "int8 dynamic quantization of the Linear layers, on the CPU (--device auto picks the CPU); on a CPU with "
        "bf16 it measured no faster and about a point less accurate (docs/performance.md): check it on your data with pipeline.evaluate --quantize"))
    parser.add_argument(
        "--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", TrackingConfig.uri),
        help="MLflow tracking/registry URI for models:/ URIs (default: %(default)s)",
    )


def text_columns(args: argparse.Namespace) -> list[str]:
    return [c.strip() for c in args.text_columns.split(",") if c.strip()]


def main(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], object], argv: list[str] | None) -> int:
    secrets.guard_process()  # --help prints the default tracking URI, which may hold a password
    interrupts.redeliver_swallowed()
    interrupts.stop_on_sigterm()
    args = parser.parse_args(argv)
    try:
        if args.batch_size < 1:
            raise PipelineError(f"--batch-size={args.batch_size}: must be at least 1")
        run(args)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"interrupted ({interrupts.what(err)}): run the same command again", file=sys.stderr)
        return 130
    return 0
