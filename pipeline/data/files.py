"""Rows in and out of users' files: CSV, JSONL (or JSON) and Parquet by suffix, `-` for one text per line
on stdin; texts joined from their columns as training joins them."""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from pipeline.errors import PipelineError

# Users' files by suffix, everywhere: training reads them through `datasets` (its loader named here), the
# commands after the search through pandas (read_frame).
FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
STDIN = "-"


def read_rows(path: str, option: str = "--input") -> pd.DataFrame:
    """The file's rows (`-`: stdin, one text per line, as column `text`); bad files are one-line errors."""
    if path == STDIN:
        lines = [line.rstrip("\r\n") for line in sys.stdin]
        rows = pd.DataFrame({"text": [line for line in lines if line.strip()]})
    else:
        rows = _read_file(Path(path), option)
    if rows.empty:
        raise PipelineError(
            f"{option}={path}: no rows; the file needs data" + (" under its header" if path.endswith(".csv") else "")
        )
    return rows


def _read_file(path: Path, option: str) -> pd.DataFrame:
    if path.suffix.lower() not in FORMATS:
        raise PipelineError(
            f"{option}={path}: unknown format {path.suffix!r}; use {', '.join(FORMATS)}, or - for stdin"
        )
    if not path.is_file():
        raise PipelineError(f"{option}={path}: no such file")
    if path.suffix.lower() == ".csv":
        check_csv_fields(path, f"{option}={path}")
    try:
        return read_frame(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except UnicodeDecodeError as err:
        raise PipelineError(f"{option}={path}: not UTF-8 ({err.reason}); re-save it as UTF-8") from None
    except Exception as err:  # pandas / pyarrow parse errors
        raise PipelineError(
            f"{option}={path}: could not be read as {path.suffix[1:]}: {str(err).splitlines()[0]}"
        ) from None


def read_frame(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".csv":  # cells as written (no "007" -> 7.0); empty cells stay missing, as training reads them
        return pd.read_csv(path, dtype=str)
    if suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_json(path, lines=suffix == ".jsonl")


def check_csv_fields(path: Path, where: str) -> None:
    """One line naming the first row with more fields than the header: pandas would take the extra leading
    field as the row's index and shift every value left, so the text read would be the wrong one."""
    csv.field_size_limit(2**31 - 1)  # long texts are fine (the default stops at 128 KiB); a C long everywhere
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            for row in reader:
                if len(row) > len(header):
                    raise PipelineError(
                        f"{where}: line {reader.line_num} has {len(row)} fields, the header {len(header)} "
                        f'({", ".join(header)}); quote texts that hold commas ("hello, world"), or name every column '
                        "in the header"
                    )
    except (UnicodeDecodeError, csv.Error):
        return  # the file's reader reports these in its own words


def texts_of(rows: pd.DataFrame, columns: list[str], where: str) -> list[str]:
    """Each row's text: its `columns` joined with a space, missing values left out (as in training)."""
    require_columns(rows, columns, where, "--text-columns")
    values = rows[columns].astype(object).where(rows[columns].notna(), None)
    return [joined(row) for row in values.itertuples(index=False)]


def joined(values: Iterable[object]) -> str:
    """One text from a row's text columns: joined with a space, missing values left out (training and the
    commands after it join them alike)."""
    return " ".join(str(v) for v in values if v is not None)


def require_columns(rows: pd.DataFrame, columns: list[str], where: str, option: str) -> None:
    """One line naming the first missing column, the file's columns and the option that picks them."""
    missing = [c for c in columns if c not in rows.columns]
    if missing:
        raise PipelineError(
            f"{where}: column {missing[0]!r} not found (columns: {', '.join(map(str, rows.columns))}); set {option}"
        )


def write_rows(rows: pd.DataFrame, output: str | None) -> None:
    """To `output` by its suffix (CSV, JSONL, JSON, Parquet), or as CSV to stdout."""
    if output is None:
        rows.to_csv(sys.stdout, index=False)
        return
    path = Path(output)
    if path.suffix.lower() not in FORMATS:
        raise PipelineError(f"--output={output}: unknown format {path.suffix!r}; use {', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside it, then renamed into place whole: a failed or interrupted write leaves no half a file.
    partial = path.with_name(f".{path.name}.partial")
    try:
        _write_frame(rows, partial, path.suffix.lower())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _write_frame(rows: pd.DataFrame, path: Path, suffix: str) -> None:
    if suffix == ".csv":
        rows.to_csv(path, index=False)
    elif suffix == ".parquet":
        rows.to_parquet(path, index=False)
    else:
        rows.to_json(path, orient="records", lines=suffix == ".jsonl")
