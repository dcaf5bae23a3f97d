"""Bad input by class, not by case: data files and config overrides made by a seeded generator, each run
through the checking pass (in this process) and a share of them through the real command. The rule, for
every input: either it passes and the run reads (and trains on) exactly the rows and labels the user named,
or it fails with exactly one `error:` line, no traceback, and nothing recorded in MLflow or Optuna.

`pytest tests/test_fuzz.py --fuzz-examples 2000 --fuzz-seed 7` runs it longer (docs/reliability.md). An input
that ever broke the rule is kept as a case of tests/test_bad_input.py."""

from __future__ import annotations

import csv
import io
import json
import random
import sqlite3
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.splits import load_splits
from pipeline.errors import PipelineError, one_line
from pipeline.runtime import writable
from pipeline.schema import check_config
from tests.conftest import compose_config, run_entry_point

# The tiny model on the generated file, every row of it (TINY's rows and caps are AG News's).
BASE = ["model=tiny", "dataset.max_length=48", "trainer.learning_rate=0.001"]
WORDS = ["match", "goal", "bank", "shares", "lab", "cells", "café", "naïve", "東京", "😀", "don't", 'say "hi"', "a,b"]
LABEL_SETS = {
    "str": ["sport", "money", "science"],
    "int": [0, 1, 2],
    "int_from_one": [1, 2, 3],
    "float_int": [1.0, 2.0, 3.0],
    "bool": [True, False],
}
# Faults a file can carry; each a class of inputs. `fail`: the input must be refused; `either`: an error or a
# run on what was named are both right (a numeric text column is suspicious, not wrong).
FAULTS = {
    "none": "pass",
    "repeated_header": "fail",
    "empty_header": "fail",
    "header_in_other_case": "fail",
    "header_with_spaces": "fail",
    "empty_label": "fail",
    "fractional_labels": "fail",
    "mixed_label_kinds": "fail",  # in JSON; a CSV reads every label as a string, which is fine
    "one_class": "fail",
    "too_few_rows": "fail",
    "no_rows": "fail",
    "undeclared_latin1": "fail",
    "declared_latin1": "pass",
    "auto_latin1": "pass",
    "utf16": "pass",
    "bom": "pass",
    "labels_differing_by_case": "fail",
    "extra_field_in_a_row": "fail",  # CSV: the reader would shift the row; JSON: a column more, fine
    "missing_text_in_a_row": "pass",
    "some_empty_texts": "pass",
    "every_text_empty": "fail",
    "numeric_text": "either",
    "nested_text": "fail",
    "long_text": "pass",
}
FORMATS = ("csv", "jsonl", "json", "parquet")
JSON_ONLY = {"mixed_label_kinds", "nested_text"}
CSV_ONLY = {"undeclared_latin1", "declared_latin1", "auto_latin1", "utf16", "bom", "extra_field_in_a_row"}
NOT_JSON = {"repeated_header", "empty_header"}  # JSON objects: a repeated key is the reader's own error


@dataclass
class DataInput:
    """A generated data file, what the config names, and what reading it must give."""

    fmt: str
    fault: str
    columns: list[str]  # the file's header
    rows: list[list[object]]  # values in header order
    text_columns: list[str] = field(default_factory=lambda: ["text"])
    label_column: str = "label"
    encoding: str = "utf-8"  # the file's bytes
    declared: str = "utf-8"  # dataset.encoding
    expected: Counter | None = None  # (text, label name) pairs a run must read, for a must-pass input

    @property
    def expect(self) -> str:
        return FAULTS[self.fault]

    def overrides(self, path: Path) -> list[str]:
        columns = ",".join(f'"{c}"' for c in self.text_columns)
        return [
            "dataset=local",
            f"dataset.train_file={path}",
            f"dataset.text_columns=[{columns}]",
            f"dataset.label_column={self.label_column}",
            f"dataset.encoding={self.declared}",
        ]


def text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))


def data_input(rng: random.Random) -> DataInput:
    fmt = rng.choice(FORMATS)
    allowed = [
        f
        for f in FAULTS
        if not (f in JSON_ONLY and not fmt.startswith("json"))
        and not (f in CSV_ONLY and fmt != "csv")
        and not (f in NOT_JSON and fmt.startswith("json"))
    ]
    fault = rng.choice(allowed) if rng.random() < 0.7 else "none"
    kind = rng.choice(list(LABEL_SETS))
    labels = LABEL_SETS[kind][: rng.choice([2, 3])]
    if fault == "fractional_labels":
        labels = [0.5, 1.5]
    if fault == "one_class":
        labels = labels[:1]
    if fault == "labels_differing_by_case":
        labels = ["Pos", "pos", "neg"]
    per_class = {"too_few_rows": 1, "no_rows": 0}.get(fault, rng.choice([12, 20]))
    two_texts = rng.random() < 0.3
    text_columns = ["title", "body"] if two_texts else ["text"]
    rows = []
    for label in labels:
        for _ in range(per_class):
            rows.append([*(text(rng) for _ in text_columns), label])
    rng.shuffle(rows)
    columns = [*text_columns, "label"]
    found = DataInput(fmt, fault, columns, rows, list(text_columns))
    _apply(found, rng)
    if found.expect == "pass":
        found.expected = Counter(
            (_joined(row[: len(text_columns)], fmt), _label_name(row[-1])) for row in found.rows if len(row) > 1
        )
    return found


def _apply(found: DataInput, rng: random.Random) -> None:
    """The fault, made in the file or the config."""
    fault, rows = found.fault, found.rows
    if fault == "repeated_header":
        found.columns.append(found.text_columns[0])
        for row in rows:
            row.append(text(rng))
    elif fault == "empty_header":
        found.columns.insert(0, rng.choice(["", " "]))
        for row in rows:
            row.insert(0, "x")
    elif fault == "header_in_other_case":
        found.columns[0] = found.columns[0].upper()
    elif fault == "header_with_spaces":
        found.columns[0] = f" {found.columns[0]}"
    elif fault == "empty_label":
        rows[rng.randrange(len(rows))][-1] = None
    elif fault == "mixed_label_kinds":
        for row in rows[::3]:
            row[-1] = str(row[-1]) + "x" if not isinstance(row[-1], str) else 7
    elif fault in ("undeclared_latin1", "declared_latin1", "auto_latin1"):
        found.encoding = "latin-1"
        found.declared = {"undeclared_latin1": "utf-8", "declared_latin1": "latin-1", "auto_latin1": "auto"}[fault]
        for row in rows:
            row[0] = f"{row[0]} é à ü"
            row[:-1] = ["".join(c if ord(c) < 256 else "?" for c in value) for value in row[:-1]]  # Latin-1's
    elif fault == "utf16":
        found.encoding = found.declared = "utf-16"
    elif fault == "bom":
        found.encoding = "utf-8-sig"
    elif fault == "extra_field_in_a_row":
        rows[rng.randrange(len(rows))].append("surplus")
    elif fault == "missing_text_in_a_row":
        rows[rng.randrange(len(rows))][0] = None
    elif fault == "some_empty_texts":
        for row in rows[::4]:
            row[0] = "" if found.fmt != "csv" else None  # a CSV's empty field is a missing value
    elif fault == "every_text_empty":
        for row in rows:
            row[: len(found.text_columns)] = [None] * len(found.text_columns)
    elif fault == "numeric_text":
        for row in rows:
            row[0] = rng.randint(0, 10**6)
    elif fault == "nested_text":
        rows[0][0] = ["a", "list"]
    elif fault == "long_text":
        rows[0][0] = " ".join(rng.choice(WORDS) for _ in range(20_000))


def _joined(values: list[object], fmt: str) -> str:
    """A row's text as training joins it: missing values left out (a CSV's empty field is missing)."""
    return " ".join(str(v) for v in values if v is not None and not (fmt == "csv" and v == ""))


def _label_name(value: object) -> str:
    return str(int(value)) if isinstance(value, float) else str(value)


def write(found: DataInput, directory: Path) -> Path:
    path = directory / f"train.{found.fmt}"
    records = [dict(zip(found.columns, row)) for row in found.rows]
    if found.fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(found.columns)
        writer.writerows(["" if v is None else v for v in row] for row in found.rows)
        path.write_bytes(out.getvalue().encode(found.encoding))
    elif found.fmt == "jsonl":
        lines = [json.dumps(dict(zip(found.columns, row)), ensure_ascii=False) for row in found.rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif found.fmt == "json":
        path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    else:
        arrays = [pa.array([row[i] if i < len(row) else None for row in found.rows]) for i in range(len(found.columns))]
        pq.write_table(pa.Table.from_arrays(arrays, names=found.columns), path)
    return path


# Config overrides by class: values the schema's types refuse, numbers out of range, unknown choices, and paths
# that cannot be written. `{file}` is a regular file, `{dir}` a directory.
BAD_VALUES = {
    "dataset.max_length": ["0", "-5", "abc", "1.5"],
    "dataset.validation_fraction": ["0", "1", "-0.1", "1.5", "nan", "abc"],
    "dataset.test_fraction": ["0", "1", "2", "inf"],
    "dataset.max_train_samples": ["0", "-1", "lots"],
    "dataset.max_eval_samples": ["0", "-3"],
    "dataset.encoding": ["utf-9", "klingon"],
    "dataset.text_columns": ["[]"],
    "seed": ["-1", "4294967296", "x"],
    "search.n_trials": ["0", "-1", "1.5", "many"],
    "search.timeout": ["0", "-3"],
    "search.n_startup_trials": ["-1"],
    "search.seeds": ["0", "-2", "1.5"],
    "search.heartbeat_interval": ["0", "-1"],
    "search.grace_period": ["0"],
    "search.storage_retry_s": ["0"],
    "tracking.max_outage_s": ["-1"],
    "mode": ["searchh", "1"],
    "search.pruner": ["sometimes"],
    "search.sampler": ["grid"],
    "registry.name": ["a/b", "..", "x y"],
    "hydra.run.dir": ["{file}/run", "/proc/fuzz/run", "{dir}/" + "n" * 300],
    "tracking.artifact_dir": ["{file}/artifacts", "/proc/fuzz/artifacts"],
    "search.checkpoint_dir": ["{file}/checkpoints", "/proc/fuzz/checkpoints", "{dir}/" + "c" * 300],
    "tracking.uri": ["sqlite:///{file}/m.db", "sqlite:///{dir}", "sqlite:////proc/fuzz/m.db", "ftp://x"],
    "search.storage": ["sqlite:///{file}/o.db", "sqlite:///{dir}", "sqlite:////proc/fuzz/o.db"],
}
GOOD_VALUES = {
    "dataset.validation_fraction": ["0.25"],
    "seed": ["0", "7"],
    "dataset.encoding": ["auto", "latin-1"],
    "search.checkpoint_dir": ["{dir}/new/deeper/checkpoints"],
    "hydra.run.dir": ["{dir}/runs/new"],
}


def config_input(rng: random.Random) -> tuple[str, str, str]:
    """(key, value, 'fail' or 'pass')."""
    good = rng.random() < 0.15
    key = rng.choice(list(GOOD_VALUES if good else BAD_VALUES))
    return key, rng.choice((GOOD_VALUES if good else BAD_VALUES)[key]), "pass" if good else "fail"


def checking_pass(overrides: list[str]):
    """What a run checks before it trains or records: the composed config (Hydra's types and choices), the
    schema's ranges and paths, the run's directory, then the data read, split and checked."""
    try:
        cfg = compose_config(*overrides)
    except Exception as err:  # Hydra's composition errors, which the entry point puts on one line
        raise PipelineError(one_line(err)) from None
    writable.check_directory("hydra.run.dir", cfg.hydra.run.dir)
    check_config(cfg)
    return cfg, load_splits(cfg.dataset, cfg.seed)


def outcome(overrides: list[str]) -> tuple[str, object]:
    """('pass', splits), ('fail', message) or ('broken', traceback)."""
    try:
        return "pass", checking_pass(overrides)[1]
    except PipelineError as err:
        return "fail", str(err)
    except Exception:
        return "broken", traceback.format_exc()


def read_back(splits) -> Counter:
    names = splits["train"].features["label"].names
    return Counter((t, names[y]) for ds in splits.values() for t, y in zip(ds["text"], ds["label"]))


def broken_rule(found: str, result: object, expect: str, expected: Counter | None) -> str | None:
    """What about an outcome breaks the rule, or None."""
    if found == "broken":
        return f"not one line: {result}"
    if found == "fail":
        if "\n" in result or not result.strip():
            return f"an error of more than one line: {result!r}"
        return "refused an input that must pass: " + result if expect == "pass" else None
    if expect == "fail":
        return "accepted an input that must be refused"
    if expected is not None and read_back(result) != expected:
        return "read other rows or labels than the file's"
    return None


@pytest.fixture(scope="module")
def fuzz(request) -> tuple[int, int]:
    return request.config.getoption("--fuzz-examples"), request.config.getoption("--fuzz-seed")


def data_cases(seed: int, n: int) -> list[DataInput]:
    rng = random.Random(seed)
    return [data_input(rng) for _ in range(n)]


def test_generated_data_files_pass_or_fail_in_one_line(fuzz, tmp_path, caplog):
    n, seed = fuzz
    found = data_cases(seed, n)
    problems, counts = [], Counter()
    for i, case in enumerate(found):
        directory = tmp_path / f"d{i}"
        directory.mkdir()
        path = write(case, directory)
        result = outcome([*BASE, *case.overrides(path), f"hydra.run.dir={directory}/run"])
        counts[(case.expect, result[0])] += 1
        if problem := broken_rule(*result, case.expect, case.expected):
            problems.append(f"#{i} {case.fmt} {case.fault}: {problem[:600]}")
    print(dict(counts))
    assert not problems, "\n".join(problems)
    assert counts[("pass", "pass")] and counts[("fail", "fail")]  # the generator makes both


def test_generated_config_overrides_pass_or_fail_in_one_line(fuzz, tmp_path):
    n, seed = fuzz
    rng = random.Random(seed + 1)
    (tmp_path / "a_file").write_text("not a directory")
    good = tmp_path / "good.csv"
    good.write_text("text,label\n" + "".join(f"row {i} {WORDS[i % 5]},{'ab'[i % 2]}\n" for i in range(40)))
    problems = []
    for i in range(n):
        key, value, expect = config_input(rng)
        value = value.format(file=tmp_path / "a_file", dir=tmp_path)
        base = [*BASE, "dataset=local", f"dataset.train_file={good}", f"hydra.run.dir={tmp_path}/run{i}"]
        result = outcome([*base, f"{key}={value}"])
        if problem := broken_rule(*result, expect, None):
            problems.append(f"#{i} {key}={value[:80]}: {problem[:600]}")
        elif result[0] == "fail" and key.split(".")[-1] not in result[1]:
            problems.append(f"#{i} {key}={value[:80]}: the error does not name the key: {result[1]}")
    assert not problems, "\n".join(problems)


E2E = 20  # inputs through the real command


def recorded(cwd: Path) -> dict[str, int]:
    counts = {}
    for db, table in (("mlflow.db", "runs"), ("mlflow.db", "registered_models"), ("optuna.db", "trials")):
        path = cwd / "mlruns" / db
        if path.exists():
            with sqlite3.connect(path) as conn:
                counts[table] = conn.execute(f"select count(*) from {table}").fetchone()[0]
    return counts


@pytest.mark.slow
def test_generated_inputs_through_the_real_command(fuzz, tmp_path, monkeypatch, capsys):
    """Every input gets exit 0 and a model of the labels named, or exit 2 with one `error:` line as the last
    line of stderr and nothing recorded."""
    n, seed = fuzz
    cases = data_cases(seed + 2, E2E)
    problems = []
    for i, case in enumerate(cases):
        cwd = tmp_path / f"e{i}"
        cwd.mkdir()
        path = write(case, cwd)
        command = [
            *BASE,
            *case.overrides(path),
            "search.n_trials=1",
            "trainer.num_train_epochs=1",
            "dataset.max_length=32",
            # Absolute: this process keeps MLflow's store per URI string.
            f"tracking.uri=sqlite:///{cwd}/mlruns/mlflow.db",
            f"search.storage=sqlite:///{cwd}/mlruns/optuna.db",
        ]
        code, stderr = run_entry_point(monkeypatch, capsys, cwd, *command)
        lines = [line for line in stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error: ")]
        if code == 0:
            problem = "accepted an input that must be refused" if case.expect == "fail" else None
            labels = _registered_labels(cwd)
            if case.expected is not None and labels != {label for _, label in case.expected}:
                problem = f"registered a model of labels {labels}"
        elif code == 2:
            problem = None
            if len(errors) != 1 or lines[-1] != errors[0] or "Traceback" in stderr:
                problem = f"not one error line last: {stderr[-1500:]}"
            elif any(recorded(cwd).values()):
                problem = f"recorded {recorded(cwd)}"
            elif case.expect == "pass":
                problem = f"refused an input that must pass: {errors[0]}"
        else:
            problem = f"exit {code}: {stderr[-1500:]}"
        if problem:
            problems.append(f"#{i} {case.fmt} {case.fault}: {problem}")
    assert not problems, "\n".join(problems)


def _registered_labels(cwd: Path) -> set[str]:
    """The labels of the registered model's per-class test metrics (`test_precision_<label>`)."""
    with sqlite3.connect(cwd / "mlruns" / "mlflow.db") as conn:
        keys = [k for (k,) in conn.execute("select distinct key from metrics where key like 'test_precision_%'")]
    return {k.removeprefix("test_precision_") for k in keys}


def test_the_generator_makes_every_class_in_every_format_it_applies_to():
    cases = data_cases(0, 600)
    made = {(c.fmt, c.fault) for c in cases}
    for fmt in FORMATS:
        for fault in FAULTS:
            applies = not (
                (fault in JSON_ONLY and not fmt.startswith("json"))
                or (fault in CSV_ONLY and fmt != "csv")
                or (fault in NOT_JSON and fmt.startswith("json"))
            )
            assert ((fmt, fault) in made) == applies, (fmt, fault)
    frame = pd.DataFrame([{"fmt": c.fmt, "expect": c.expect} for c in cases])
    assert set(frame["expect"]) == {"pass", "fail", "either"}
