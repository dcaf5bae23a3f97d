"""Rows in and out of users' files: CSV, JSONL (or JSON) and Parquet by suffix, `-` for one text per line
on stdin; texts joined from their columns as training joins them."""

from __future__ import annotations

import codecs
import csv
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from pipeline.errors import PipelineError
from pipeline.runtime import writable

# Users' files by suffix, everywhere: training reads them through `datasets` (its loader named here), the
# commands after the search through pandas (read_frame).
FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
STDIN = "-"
AUTO_ENCODINGS = ("utf-8", "cp1252", "latin-1")  # what `dataset.encoding=auto` tries, in order


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


def check_header(path: Path, where: str, encoding: str = "utf-8") -> None:
    """A CSV's or Parquet file's column names as its reader sees them: none empty, none repeated (the
    reader renames a repeated `text` to `text.1` and reads the first one, silently). A JSON object's
    repeated key is its reader's error."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        names = _csv_header(path, encoding)
    elif suffix == ".parquet":
        names = _parquet_header(path, where)
    else:
        return
    for number, name in enumerate(names, 1):
        if not name.strip():
            raise PipelineError(
                f"{where}: column {number} of the header has no name (an index pandas wrote? save with "
                "index=False); name every column"
            )
    repeated = next((name for name in names if names.count(name) > 1), None)
    if repeated is not None:
        raise PipelineError(
            f"{where}: the header names column {repeated!r} {names.count(repeated)} times; the reader would read "
            "only the first; give each column its own name"
        )


def _csv_header(path: Path, encoding: str) -> list[str]:
    try:
        with path.open(encoding=_with_bom(encoding), newline="") as f:
            return next(csv.reader(f), [])
    except (UnicodeDecodeError, csv.Error):
        return []  # the reader reports these in its own words


def _parquet_header(path: Path, where: str) -> list[str]:
    import pyarrow.parquet as pq  # a parquet file's schema, without reading its rows

    try:
        return pq.read_schema(path).names
    except Exception as err:  # pyarrow's errors for a file that is not Parquet
        raise PipelineError(f"{where}: could not be parsed as parquet: {str(err).splitlines()[0]}") from None


def text_encoding(path: Path, encoding: str) -> str:
    """`dataset.encoding` for this file: `auto` is UTF-8 where the whole file decodes as UTF-8, else
    Windows-1252 (what Excel and many exports write in Western Europe), else Latin-1 (which decodes any byte)."""
    if encoding != "auto":
        return encoding
    for candidate in AUTO_ENCODINGS:
        decoder = codecs.getincrementaldecoder(candidate)()
        try:
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    decoder.decode(chunk)
                decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            continue
        return candidate
    return AUTO_ENCODINGS[-1]


def not_in_encoding(err: UnicodeDecodeError, encoding: str) -> str:
    """What a file that does not decode is told: the byte, and how to say its encoding."""
    return (
        f"not {encoding} (byte {err.object[err.start : err.start + 1]!r}: {err.reason}); set "
        "dataset.encoding to the file's (latin-1, cp1252, utf-16, ...) or auto, or re-save it as UTF-8"
    )


def _with_bom(encoding: str) -> str:
    """UTF-8 files from Excel start with a byte-order mark, which the readers skip."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def check_csv_fields(path: Path, where: str, encoding: str = "utf-8") -> None:
    """One line naming the first row with more fields than the header: pandas would take the extra leading
    field as the row's index and shift every value left, so the text read would be the wrong one."""
    csv.field_size_limit(2**31 - 1)  # long texts are fine (the default stops at 128 KiB); a C long everywhere
    try:
        with path.open(encoding=_with_bom(encoding), newline="") as f:
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


def check_output(output: str | None) -> None:
    """`--output` before any work: a format it can write, in a directory it can write."""
    if output is None:
        return
    path = Path(output)
    if path.suffix.lower() not in FORMATS:
        raise PipelineError(f"--output={output}: unknown format {path.suffix!r}; use {', '.join(FORMATS)}")
    if path.is_dir():
        raise PipelineError(f"--output={output}: is a directory; name a file, e.g. {path / 'predictions.csv'}")
    writable.check_directory("--output", path.parent, where=f"--output={output}")


def write_rows(rows: pd.DataFrame, output: str | None) -> None:
    """To `output` by its suffix (CSV, JSONL, JSON, Parquet), or as CSV to stdout."""
    if output is None:
        rows.to_csv(sys.stdout, index=False)
        return
    path = Path(output)
    check_output(output)
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
