"""Raw rows from where they are (an AG News CSV release, users' CSV/JSON/Parquet files, the Hub), read
through `datasets` (parsed files are cached by content) and normalized to a `text` string and a ClassLabel
`label`; each bad input is one line naming the file or key and the fix."""

from __future__ import annotations

import contextlib
import html
import inspect
import logging
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, DatasetDict

from pipeline.data import internals
from pipeline.data.files import FORMATS, check_csv_fields, check_header, joined, not_in_encoding, text_encoding
from pipeline.errors import PipelineError, did_you_mean
from pipeline.schema import DatasetConfig

AG_NEWS_COLUMNS = ["label", "title", "description"]
_ESCAPED_PUNCT = re.compile(r"\\([^A-Za-z0-9\s\\])")  # \$ -> $
_LINE_BREAK = re.compile(r"\\+")  # the release marks line breaks with backslashes: "broader\network"
_NUMERIC_ENTITY = re.compile(r"\s?&?#(\d+);")  # "India #39;s" -> "India's"
_NAMED_ENTITY = re.compile(r"&?\b(quot|amp|lt|gt);")
_SPACES = re.compile(r"\s+")
log = logging.getLogger(__name__)
ROWS_AT_A_TIME = 8_192  # where every row is read (hashing, checks): bounds the memory it takes


def read(cfg: DatasetConfig) -> tuple[Dataset, Dataset | None]:
    """Raw train and (optional) test, normalized to `text` + ClassLabel `label`."""
    if cfg.data_dir:
        return read_ag_news_csv(cfg.data_dir)
    if cfg.train_file:
        files = {"train": cfg.train_file, **({"test": cfg.test_file} if cfg.test_file else {})}
        raw = _load_local(files, cfg.encoding)
        source = {split: f"dataset.{split}_file={path}" for split, path in files.items()}
    elif cfg.hub_id:
        raw = _load_hub(cfg)
        source = {split: f"dataset.hub_id={cfg.hub_id} ({split})" for split in raw}
    else:
        raise PipelineError(f"dataset={cfg.name}: set dataset.data_dir, dataset.train_file or dataset.hub_id")
    train = _normalize(raw["train"], cfg, None, source["train"])
    names = train.features["label"].names
    test = _normalize(raw["test"], cfg, names, source["test"]) if "test" in raw else None
    return train, test


def label_names(splits: DatasetDict) -> list[str]:
    return splits["train"].features["label"].names


def batches(ds: Dataset, columns: list[str]) -> Iterator[pa.Table]:
    """`columns` of every row, in row order (through a split's indices), `ROWS_AT_A_TIME` rows at a time."""
    return ds.select_columns(columns).with_format("arrow").iter(ROWS_AT_A_TIME)


def read_ag_news_csv(data_dir: str | Path) -> tuple[Dataset, Dataset]:
    """The original AG News CSV release: no header, class index 1..4, title, description; classes.txt."""
    root = Path(data_dir)
    if not root.is_dir():
        raise PipelineError(f"dataset.data_dir={data_dir}: no such directory")
    missing = [f for f in ("train.csv", "test.csv", "classes.txt") if not (root / f).is_file()]
    if missing:
        raise PipelineError(
            f"dataset.data_dir={data_dir} lacks {', '.join(missing)}: expected the AG News CSV release "
            "(train.csv, test.csv, classes.txt)"
        )
    names = [line.strip() for line in _read_text(root / "classes.txt").splitlines() if line.strip()]
    splits = []
    for split in ("train", "test"):
        raw = _load_files("csv", {split: str(root / f"{split}.csv")}, column_names=AG_NEWS_COLUMNS)[split]
        splits.append(_from_release(raw, names, root / f"{split}.csv"))
    return splits[0], splits[1]


def unescape_ag_news(text: str) -> str:
    """Undo the release's escapes: `\\$` for `$`, backslash line breaks, `#39;`-style entities."""
    text = _LINE_BREAK.sub(" ", _ESCAPED_PUNCT.sub(r"\1", text))
    text = _NAMED_ENTITY.sub(lambda m: html.unescape(f"&{m.group(1)};"), _NUMERIC_ENTITY.sub(_char, text))
    return _SPACES.sub(" ", text).strip()


def _char(match: re.Match) -> str:
    return chr(int(match.group(1)))


def _from_release(raw: Dataset, names: list[str], path: Path) -> Dataset:
    bad = sorted((v for v in raw.unique("label") if not (isinstance(v, int) and 1 <= v <= len(names))), key=str)
    if bad:
        raise PipelineError(f"{path}: class index {bad[0]!r} is outside 1..{len(names)} (classes.txt)")

    def convert(row: dict) -> dict:
        title, description = unescape_ag_news(row["title"] or ""), unescape_ag_news(row["description"] or "")
        return {"text": f"{title} {description}".strip(), "label": row["label"] - 1}

    features = datasets.Features(text=datasets.Value("string"), label=ClassLabel(names=names))
    return raw.map(convert, remove_columns=raw.column_names, features=features, desc="ag_news release")


def _load_local(files: dict[str, str], encoding: str) -> DatasetDict:
    """Each file read in its own format (train JSONL and test Parquet is fine), one at a time, so that an
    error names the file at fault."""
    formats: dict[str, str] = {}
    encodings: dict[str, str] = {}
    for split, path in files.items():
        if not Path(path).is_file():
            raise PipelineError(f"dataset.{split}_file={path}: no such file")
        suffix = Path(path).suffix.lower()
        if suffix not in FORMATS:
            named = f"unknown format {suffix!r}" if suffix else "no suffix to tell its format"
            raise PipelineError(f"dataset.{split}_file={path}: {named}; use {', '.join(FORMATS)}")
        formats[split] = FORMATS[suffix]
        encodings[split] = text_encoding(Path(path), encoding) if formats[split] != "parquet" else "utf-8"
        if encodings[split] != encoding:
            log.info("dataset.%s_file=%s: read as %s (dataset.encoding=%s)", split, path, encodings[split], encoding)
        check_header(Path(path), f"dataset.{split}_file={path}", encodings[split])
        if formats[split] == "csv":
            check_csv_fields(Path(path), f"dataset.{split}_file={path}", encodings[split])
    return DatasetDict(
        {split: _load_files(formats[split], {split: path}, encodings[split])[split] for split, path in files.items()}
    )


def _load_files(fmt: str, files: dict[str, str], encoding: str = "utf-8", **kwargs) -> DatasetDict:
    """Read through `datasets` so parsed files are cached by content across runs."""
    if fmt in ("csv", "json"):
        kwargs["encoding"] = encoding
    try:
        with _silenced("datasets"):  # its own `error:` log line would come before ours
            return datasets.load_dataset(fmt, data_files=files, **kwargs)
    except Exception as err:  # pandas / pyarrow parse errors, wrapped by datasets in DatasetGenerationError
        while err.__cause__ is not None:
            err = err.__cause__
        where = ", ".join(files.values())
        if isinstance(err, UnicodeDecodeError):
            raise PipelineError(f"{where}: {not_in_encoding(err, kwargs.get('encoding', 'utf-8'))}") from None
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        if internals.says_no_rows(reason):
            raise PipelineError(f"{where}: no rows; the file needs data under its header") from None
        raise PipelineError(f"{where}: could not be parsed as {fmt}: {reason}") from None


@contextlib.contextmanager
def _silenced(logger: str) -> Iterator[None]:
    """`logger`'s records off for the block (its errors are ours to report, in one line)."""
    before = logging.getLogger(logger).level
    logging.getLogger(logger).setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logging.getLogger(logger).setLevel(before)


def _load_hub(cfg: DatasetConfig) -> DatasetDict:
    splits = {"train": cfg.hub_train_split, **({"test": cfg.hub_test_split} if cfg.hub_test_split else {})}
    try:
        return DatasetDict({name: datasets.load_dataset(cfg.hub_id, split=s) for name, s in splits.items()})
    except (ConnectionError, OSError) as err:
        raise PipelineError(
            f"dataset.hub_id={cfg.hub_id}: the Hugging Face Hub is unreachable ({type(err).__name__}); "
            "offline, read local files: dataset.data_dir=DIR (AG News CSV release) or dataset=local "
            "dataset.train_file=PATH"
        ) from None


def _normalize(ds: Dataset, cfg: DatasetConfig, names: list[str] | None, source: str) -> Dataset:
    """Join `text_columns` into `text`; map `label_column` onto class ids (names inferred from train)."""
    missing = [c for c in [*cfg.text_columns, cfg.label_column] if c not in ds.column_names]
    if missing:
        raise PipelineError(
            f"{source}: column {missing[0]!r} not found (columns: {', '.join(ds.column_names)})"
            f"{did_you_mean(missing[0], ds.column_names)}; set dataset.text_columns / dataset.label_column"
        )
    if len(ds) == 0:
        raise PipelineError(f"{source}: no rows")
    _check_column_types(ds, cfg, source)
    names, as_name = _label_mapping(ds, cfg.label_column, names, source)
    index = {name: i for i, name in enumerate(names)}
    columns, label_column = cfg.text_columns, cfg.label_column

    def convert(batch: dict) -> dict:
        texts = [joined(row) for row in zip(*(batch[c] for c in columns))]
        return {"text": texts, "label": [index[as_name(v)] for v in batch[label_column]]}

    features = datasets.Features(text=datasets.Value("string"), label=ClassLabel(names=names))
    normalized = ds.map(
        convert,
        batched=True,
        remove_columns=ds.column_names,
        features=features,
        desc="normalize",
        # Explicit: datasets' hash of this closure differs between processes, which made every run normalize
        # and tokenize a local file again. The code's own text stands for what `convert` makes.
        new_fingerprint=internals.cache_key(
            ds, list(columns), label_column, names, *map(inspect.getsource, (_normalize, _label_mapping, joined))
        ),
    )
    if not any(_has_text(batch.column("text")) for batch in batches(normalized, ["text"])):
        raise PipelineError(f"{source}: every text in dataset.text_columns={list(columns)} is empty; check the columns")
    return normalized


def _label_mapping(ds: Dataset, label_column: str, names: list[str] | None, source: str) -> tuple[list[str], Callable]:
    """The class names (inferred from the training rows when `names` is None) and the function giving a raw
    label's name; empty, unknown or too few labels are one-line errors."""
    feature = ds.features[label_column]
    distinct = ds.unique(label_column)  # through Arrow: no list of every row's label
    where = f"{source}: {label_column!r}"
    if any(_is_empty_label(v, feature) for v in distinct):
        raise PipelineError(f"{where}: a label is empty; every row needs a label")
    as_name = feature.int2str if isinstance(feature, ClassLabel) else str
    if _kind(feature) == "float":  # 1.0 is class "1", as in a file of integers
        fraction = next((v for v in distinct if not float(v).is_integer()), None)
        if fraction is not None:
            raise PipelineError(
                f"{where}: label {fraction!r} is not a whole number; class labels are integers or names (a "
                "regression target is not a class)"
            )
        distinct, as_name = [int(v) for v in distinct], lambda v: str(int(v))
    if names is None:
        names = feature.names if isinstance(feature, ClassLabel) else _infer_names(distinct, where)
        if len(names) < 2:
            raise PipelineError(f"{source}: only one class ({names[0]!r}) in {label_column!r}; need two or more")
        if not isinstance(feature, ClassLabel) and len(names) > len(ds) / 2:
            raise PipelineError(
                f"{where} has {len(names)} distinct values in {len(ds)} rows, fewer than 2 rows a class: texts or ids? "
                f"set dataset.label_column to the column of class labels (columns: {', '.join(ds.column_names)}), or "
                "add rows"
            )
    unknown = sorted({as_name(v) for v in distinct} - set(names))
    if unknown:
        raise PipelineError(
            f"{source}: label {unknown[0]!r} is not among the training labels {names}; fix the file or the split"
        )
    return names, as_name


def _check_column_types(ds: Dataset, cfg: DatasetConfig, source: str) -> None:
    """Labels of one kind (all integers or all strings), texts of text: a column of mixed kinds (JSON's
    `1` and `"spam"`) or of lists reaches the reader as values it cannot compare."""
    if _kind(ds.features[cfg.label_column]) is None:
        raise PipelineError(
            f"{source}: {cfg.label_column!r} holds values of mixed kinds (numbers and strings) or lists; make every "
            "label an integer or every label a string"
        )
    for column in cfg.text_columns:
        kind = _kind(ds.features[column])
        if kind is None:
            raise PipelineError(
                f"{source}: text column {column!r} holds lists, objects or values of mixed kinds; name a column of "
                "texts in dataset.text_columns"
            )
        if kind != "string":
            log.warning(
                "%s: text column %r holds only %s values: is it the text? (dataset.text_columns)", source, column, kind
            )


def _kind(feature: object) -> str | None:
    """'string', 'int', 'float' or 'bool' for a column of one scalar kind (a ClassLabel's is 'int'), else None
    (mixed kinds, which datasets reads as JSON values; lists; dates)."""
    if isinstance(feature, ClassLabel):
        return "int"
    dtype = feature.dtype if isinstance(feature, datasets.Value) else ""
    if dtype in ("string", "large_string", "null", "bool"):
        return "bool" if dtype == "bool" else "string"
    if dtype.startswith(("int", "uint")):
        return "int"
    return "float" if dtype.startswith("float") else None


def _is_empty_label(value: object, feature: object) -> bool:
    """None, NaN, or a ClassLabel's -1 (datasets' mark for a row without a label, as in GLUE's test splits)."""
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(feature, ClassLabel) and value == -1)
    )


def _has_text(texts: pa.ChunkedArray) -> bool:
    """Whether any text holds more than whitespace (batch by batch: trimming copies the strings)."""
    return pc.max(pc.utf8_length(pc.utf8_trim_whitespace(texts))).as_py() > 0


def _infer_names(values: list, where: str) -> list[str]:
    """Sorted distinct labels (none empty): numerically for numbers, alphabetically for strings."""
    distinct = set(values)
    seen: dict[str, str] = {}
    for name in sorted(map(str, distinct)):
        other = seen.setdefault(name.strip().casefold(), name)
        if other != name:
            raise PipelineError(
                f"{where}: labels {other!r} and {name!r} differ only in surrounding spaces or letter case; "
                "make them one label in the file"
            )
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct)
    return [str(v) for v in sorted(distinct, key=(float if numeric else str))]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PipelineError(f"{path}: not UTF-8; re-save it as UTF-8") from None
