"""Raw splits (Hub, AG News CSV release, local files), label names, the validation carve-out, tokenization."""
from __future__ import annotations

import hashlib
import html
import inspect
import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, DatasetDict
from datasets.fingerprint import Hasher
from datasets.utils.stratify import stratified_shuffle_split_generate_indices

from pipeline.errors import PipelineError
from pipeline.files import check_csv_fields
from pipeline.schema import DatasetConfig

AG_NEWS_COLUMNS = ["label", "title", "description"]
_FILE_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_ESCAPED_PUNCT = re.compile(r"\\([^A-Za-z0-9\s\\])")  # \$ -> $
_LINE_BREAK = re.compile(r"\\+")  # the release marks line breaks with backslashes: "broader\network"
_NUMERIC_ENTITY = re.compile(r"\s?&?#(\d+);")  # "India #39;s" -> "India's"
_NAMED_ENTITY = re.compile(r"&?\b(quot|amp|lt|gt);")
_SPACES = re.compile(r"\s+")
log = logging.getLogger(__name__)
FINGERPRINT_PREFIX = "sha256:"  # content fingerprints; older, path-dependent ones lack it
ROWS_AT_A_TIME = 8_192  # where every row is read (hashing, checks): bounds the memory it takes


def load_splits(cfg: DatasetConfig, seed: int) -> DatasetDict:
    """Train, validation and test splits, each with a `text` string and a ClassLabel `label`."""
    train, test = _read(cfg)
    names = train.features["label"].names
    if test is None:
        train, test = _carve(train, cfg.test_fraction, seed, "dataset.test_fraction")
    train, validation = _carve(train, cfg.validation_fraction, seed, "dataset.validation_fraction")
    splits = DatasetDict(
        train=_cap(train, cfg.max_train_samples, seed),
        validation=_cap(validation, cfg.max_eval_samples, seed),
        test=_cap(test, cfg.max_eval_samples, seed),
    )
    for split, ds in splits.items():
        if len(ds) == 0:
            raise PipelineError(f"the {split} split is empty: check dataset.max_*_samples and the input files")
    assert all(ds.features["label"].names == names for ds in splits.values())
    missing = sorted(set(range(len(names))) - set(np.unique(_labels(splits["test"])).tolist()))
    if missing:
        log.warning(
            "the test split has no rows of class %s: its scores count the other classes only",
            ", ".join(repr(names[i]) for i in missing),
        )
    return splits


def tokenize(splits: DatasetDict, tokenizer, max_length: int) -> DatasetDict:
    """Tokenize every split once per run, reused across runs from the datasets cache; padding happens
    per batch in the collator."""

    options = _encoding(tokenizer)

    def encode(batch: dict) -> dict:
        return tokenizer(batch["text"], max_length=max_length, **options)

    identity = _tokenizer_identity(tokenizer)
    return DatasetDict({
        name: ds.map(
            encode, batched=True, remove_columns=["text"], desc=f"tokenize {name}",
            new_fingerprint=Hasher.hash([ds._fingerprint, identity, max_length, options]),
        )
        for name, ds in splits.items()
    })


def _encoding(tokenizer) -> dict:
    """What to keep of the tokenizer's output: the collator makes the attention mask when it pads a batch
    (a fifth less tokenizing time, a column less to cache), and token types only where a single text has
    some other than 0 (Funnel marks [CLS] with 2; BERT's are all 0, which the model assumes without them)."""
    types = tokenizer("a b", truncation=True).get("token_type_ids")
    return {"truncation": True, "return_attention_mask": False, "return_token_type_ids": bool(types and any(types))}


def _tokenizer_identity(tokenizer) -> str:
    """A hash of the tokenizer's definition. The object's own hash changes once it has truncated
    (its state records that), which would make every run miss the cache."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec.pop("truncation", None)
    spec.pop("padding", None)
    return Hasher.hash(spec)


@dataclass(frozen=True)
class DataIdentity:
    fingerprint: str  # all splits: what studies and registered versions record
    splits: dict[str, str]  # each split's own digest, for MLflow's dataset inputs


def fingerprint(splits: DatasetDict) -> str:
    return identify(splits).fingerprint


def identify(splits: DatasetDict) -> DataIdentity:
    """Hashes of the splits' content: label names, and each split's texts and labels in order. A study's
    trials, and the test scores of the versions it registers, compare only on the same data.

    Streams over Arrow batches, hashing the string and label buffers as they are: independent of file
    paths, caches, process and machine (datasets' own fingerprints hash cache paths), linear in rows."""
    names = json.dumps(label_names(splits)).encode()
    digest, per_split = hashlib.sha256(names), {}
    for name, ds in splits.items():
        split_digest = hashlib.sha256(names)
        for part in _content(name, ds):
            digest.update(part)
            split_digest.update(part)
        per_split[name] = split_digest.hexdigest()
    return DataIdentity(FINGERPRINT_PREFIX + digest.hexdigest(), per_split)


def _content(name: str, ds: Dataset) -> Iterator[bytes]:
    yield f"\x00split {name} {len(ds)}\x00".encode()
    for batch in _batches(ds, ["text", "label"]):
        yield from _string_bytes(batch.column("text").combine_chunks())
        labels = batch.column("label").combine_chunks().cast(pa.int64()).fill_null(-1)
        yield labels.to_numpy(zero_copy_only=False).astype("<i8").tobytes()


def _batches(ds: Dataset, columns: list[str]) -> Iterator[pa.Table]:
    """`columns` of every row, in row order (through a split's indices), `ROWS_AT_A_TIME` rows at a time."""
    return ds.select_columns(columns).with_format("arrow").iter(ROWS_AT_A_TIME)


def is_content_fingerprint(value: str) -> bool:
    """False for fingerprints recorded before they hashed content (datasets' hashes of cache paths)."""
    return value.startswith(FINGERPRINT_PREFIX)


def _string_bytes(strings: pa.Array) -> Iterator[bytes]:
    """Each string's length, then all their bytes: the same rows hash the same however Arrow laid them out."""
    strings = strings.fill_null("")
    width = "<i8" if pa.types.is_large_string(strings.type) else "<i4"
    offsets = np.frombuffer(strings.buffers()[1], dtype=width)[strings.offset : strings.offset + len(strings) + 1]
    yield np.diff(offsets).astype("<i8").tobytes()
    if len(strings) and strings.buffers()[2] is not None:
        yield memoryview(strings.buffers()[2])[offsets[0] : offsets[-1]]


def label_names(splits: DatasetDict) -> list[str]:
    return splits["train"].features["label"].names


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


def _read(cfg: DatasetConfig) -> tuple[Dataset, Dataset | None]:
    """Raw train and (optional) test, normalized to `text` + ClassLabel `label`."""
    if cfg.data_dir:
        return read_ag_news_csv(cfg.data_dir)
    if cfg.train_file:
        files = {"train": cfg.train_file, **({"test": cfg.test_file} if cfg.test_file else {})}
        raw = _load_local(files)
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


def _load_local(files: dict[str, str]) -> DatasetDict:
    """Each file read in its own format (train JSONL and test Parquet is fine), one at a time, so that an
    error names the file at fault."""
    formats: dict[str, str] = {}
    for split, path in files.items():
        if not Path(path).is_file():
            raise PipelineError(f"dataset.{split}_file={path}: no such file")
        suffix = Path(path).suffix.lower()
        if suffix not in _FILE_FORMATS:
            named = f"unknown format {suffix!r}" if suffix else "no suffix to tell its format"
            raise PipelineError(f"dataset.{split}_file={path}: {named}; use {', '.join(_FILE_FORMATS)}")
        formats[split] = _FILE_FORMATS[suffix]
        if formats[split] == "csv":
            check_csv_fields(Path(path), f"dataset.{split}_file={path}")
    return DatasetDict({split: _load_files(formats[split], {split: path})[split] for split, path in files.items()})


def _load_files(fmt: str, files: dict[str, str], **kwargs) -> DatasetDict:
    """Read through `datasets` so parsed files are cached by content across runs."""
    try:
        return datasets.load_dataset(fmt, data_files=files, **kwargs)
    except Exception as err:  # pandas / pyarrow parse errors, wrapped by datasets in DatasetGenerationError
        while err.__cause__ is not None:
            err = err.__cause__
        if isinstance(err, UnicodeDecodeError):
            raise PipelineError(f"{', '.join(files.values())}: not UTF-8 ({err.reason}); re-save it as UTF-8") from None
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        if "corresponds to no data" in reason:  # datasets' word for a file without rows
            raise PipelineError(f"{', '.join(files.values())}: no rows; the file needs data under its header") from None
        raise PipelineError(f"{', '.join(files.values())}: could not be parsed as {fmt}: {reason}") from None


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
            f"{source}: column {missing[0]!r} not found (columns: {', '.join(ds.column_names)}); "
            "set dataset.text_columns / dataset.label_column"
        )
    if len(ds) == 0:
        raise PipelineError(f"{source}: no rows")
    names, as_name = _label_mapping(ds, cfg.label_column, names, source)
    index = {name: i for i, name in enumerate(names)}
    columns, label_column = cfg.text_columns, cfg.label_column

    def convert(batch: dict) -> dict:
        texts = [" ".join(str(v) for v in row if v is not None) for row in zip(*(batch[c] for c in columns))]
        return {"text": texts, "label": [index[as_name(v)] for v in batch[label_column]]}

    features = datasets.Features(text=datasets.Value("string"), label=ClassLabel(names=names))
    normalized = ds.map(
        convert, batched=True, remove_columns=ds.column_names, features=features, desc="normalize",
        # Explicit: datasets' hash of this closure differs between processes, which made every run normalize
        # and tokenize a local file again. The code's own text stands for what `convert` makes.
        new_fingerprint=Hasher.hash([ds._fingerprint, list(columns), label_column, names,
                                     *map(inspect.getsource, (_normalize, _label_mapping))]),
    )
    if not any(_has_text(batch.column("text")) for batch in _batches(normalized, ["text"])):
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
    if names is None:
        names = feature.names if isinstance(feature, ClassLabel) else _infer_names(distinct, where)
        if len(names) < 2:
            raise PipelineError(f"{source}: only one class ({names[0]!r}) in {label_column!r}; need two or more")
        if not isinstance(feature, ClassLabel) and len(names) > len(ds) / 2:
            raise PipelineError(
                f"{where} has {len(names)} distinct values in {len(ds)} rows, fewer than 2 rows a class: texts or ids? "
                f"set dataset.label_column to the column of class labels (columns: {', '.join(ds.column_names)}), or add rows"
            )
    as_name = feature.int2str if isinstance(feature, ClassLabel) else str
    unknown = sorted({as_name(v) for v in distinct} - set(names))
    if unknown:
        raise PipelineError(
            f"{source}: label {unknown[0]!r} is not among the training labels {names}; fix the file or the split"
        )
    return names, as_name


def _is_empty_label(value: object, feature: object) -> bool:
    """None, NaN, or a ClassLabel's -1 (datasets' mark for a row without a label, as in GLUE's test splits)."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(feature, ClassLabel) and value == -1)


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


def _carve(ds: Dataset, fraction: float, seed: int, key: str) -> tuple[Dataset, Dataset]:
    """Seeded, stratified split of `fraction` of the rows."""
    n_classes = ds.features["label"].num_classes
    held_out = round(len(ds) * fraction)
    if not 0 < fraction < 1 or held_out < n_classes or len(ds) - held_out < n_classes:
        raise PipelineError(
            f"{key}={fraction}: {len(ds)} rows cannot give a held-out split with every one of {n_classes} "
            "classes; add rows or change the fraction"
        )
    try:
        return _stratified_split(ds, len(ds) - held_out, held_out, seed)
    except ValueError as err:
        raise PipelineError(f"{key}={fraction}: cannot stratify: {err}") from None


def _cap(ds: Dataset, limit: int | None, seed: int) -> Dataset:
    """A seeded, stratified subsample of at most `limit` rows."""
    if limit is None or limit >= len(ds):
        return ds
    if limit <= 0:
        raise PipelineError(f"dataset.max_*_samples={limit}: must be positive")
    try:
        return _stratified_split(ds, limit, len(ds) - limit, seed)[0]
    except ValueError:  # fewer rows than classes: stratification impossible, a plain sample still is
        return ds.shuffle(seed=seed).select(range(limit))


def _stratified_split(ds: Dataset, n_first: int, n_second: int, seed: int) -> tuple[Dataset, Dataset]:
    """`ds.train_test_split(train_size=n_first, test_size=n_second, seed=seed, stratify_by_column="label")`, the
    same rows in the same order, with the labels read through Arrow: datasets reads them for it one row at a
    time (8 s for 100k rows here)."""
    try:
        first, second = next(stratified_shuffle_split_generate_indices(_labels(ds), n_first, n_second, np.random.default_rng(seed)))
    except ValueError as err:
        if str(err) == "Minimum class count error":
            raise ValueError("a class has only 1 row; stratifying needs at least 2 of each") from None
        raise
    # The rows chosen, not only the arguments, name the splits in the cache: should an upgrade of datasets or
    # numpy choose others, the tokenized splits are made again rather than read stale.
    return (ds.select(first, new_fingerprint=Hasher.hash([ds._fingerprint, first])),
            ds.select(second, new_fingerprint=Hasher.hash([ds._fingerprint, second])))


def _labels(ds: Dataset) -> np.ndarray:
    """The class ids in row order, read in batches: `ds[:]` through a split's indices took 50 MB per 100k rows,
    and `ds.unique` writes the split out again first."""
    return np.concatenate([batch.column("label").to_numpy() for batch in _batches(ds, ["label"])])


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PipelineError(f"{path}: not UTF-8; re-save it as UTF-8") from None
