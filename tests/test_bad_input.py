"""Bad input fails before any training: one line `error: ...` naming the key or file, exit 2, no traceback.

Most cases call the real Hydra entry point (`pipeline.__main__.cli`) in this process, which is what
`python -m pipeline` runs; the ones about the process itself (hub offline, the Hydra message a user sees,
a dead tracking server's wait) run it in a subprocess."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import optuna
import pytest

from devtools.commands import ROOT, TINY, run_pipeline, study_storage
from devtools.services import free_port
from pipeline.search import storage
from pipeline.search.space import load_space
from pipeline.search.study import open_study
from tests import test_data
from tests.conftest import (
    compose_config,
    default_study,
    mlflow_client,
    run_entry_point,
    write_ag_news_release,
    write_space,
)

BASE = [o for o in TINY if not o.startswith("dataset.data_dir")] + ["search.n_trials=1"]
ROWS = [(c + 1, f"title {i}", f"text {i}") for c in range(4) for i in range(10)]


def run_cli(monkeypatch, capsys, cwd: Path, *overrides: str) -> tuple[int, str]:
    """`python -m pipeline BASE OVERRIDES` in this process; (exit code, stderr)."""
    return run_entry_point(monkeypatch, capsys, cwd, *BASE, *overrides)


def assert_clean_failure(code, stderr: str, cwd: Path, names: str, says: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1, stderr[-2000:]
    assert names in errors[0] and says in errors[0], errors[0]
    assert "Traceback" not in stderr
    assert_nothing_trained(cwd)
    for run_dir in (cwd / "outputs").glob("*/*"):  # a run's directory, when it has one, says why it stopped
        assert errors[0] in "".join(log.read_text() for log in run_dir.glob("*.log")), run_dir


def assert_nothing_trained(cwd: Path) -> None:
    assert not (cwd / "mlruns" / "checkpoints").exists()
    assert not list((cwd / "outputs").glob("*/*/trainer")) and not list((cwd / "outputs").glob("*/*/model"))
    db = cwd / "mlruns" / "mlflow.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("select count(*) from runs").fetchone()[0] == 0


def write_csv(path: Path, text: str | bytes) -> str:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def local(train: str, test: str | None = None) -> list[str]:
    return ["dataset=local", f"dataset.train_file={train}", *([f"dataset.test_file={test}"] if test else [])]


def space_override(tmp_path: Path, space: dict) -> str:
    return f"search.space={write_space(tmp_path, space)}"


def two_class_rows(n: int) -> str:
    return "text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(n))


# (case id, files to write -> overrides, key or file the message names, what it says)
CASES = {
    "data_dir_missing": (
        lambda p: ["dataset.data_dir=/no/such/dir"],
        "dataset.data_dir=/no/such/dir",
        "no such directory",
    ),
    "data_dir_lacks_test": (
        lambda p: [f"dataset.data_dir={write_ag_news_release(p / 'd', {'train': ROWS})}"],
        "dataset.data_dir",
        "lacks test.csv",
    ),
    "text_column_missing": (
        lambda p: local(write_csv(p / "t.csv", "body,label\n" + "x,a\n" * 10)),
        "dataset.train_file",
        "column 'text' not found",
    ),
    "label_column_missing": (
        lambda p: local(write_csv(p / "t.csv", "text,topic\n" + "x,a\n" * 10)),
        "dataset.text_columns / dataset.label_column",
        "column 'label' not found",
    ),
    "label_outside_label_set": (
        lambda p: local(
            write_csv(p / "t.csv", two_class_rows(40)), write_csv(p / "v.csv", "text,label\nx,a\ny,zebra\n")
        ),
        "dataset.test_file",
        "label 'zebra' is not among the training labels",
    ),
    "label_empty": (
        lambda p: local(write_csv(p / "t.csv", two_class_rows(40) + "late row,\n")),
        "t.csv",
        "a label is empty",
    ),
    "test_label_empty_among_numbers": (
        lambda p: local(
            write_csv(p / "t.csv", "text,label\n" + "".join(f"row {i},{i % 2 + 1}\n" for i in range(40))),
            write_csv(p / "v.csv", "text,label\nx,1\ny,\nz,2\n"),
        ),
        "dataset.test_file",
        "'label': a label is empty",
    ),
    "unknown_file_format": (
        lambda p: local(write_csv(p / "t.csv", two_class_rows(40)), write_csv(p / "v.xlsx", "not read")),
        "dataset.test_file=",
        "unknown format '.xlsx'; use .csv, .json, .jsonl, .parquet",
    ),
    "file_without_suffix": (
        lambda p: local(write_csv(p / "train", two_class_rows(40))),
        "dataset.train_file=",
        "no suffix to tell its format",
    ),
    "label_column_of_texts": (
        lambda p: (
            local(write_csv(p / "t.csv", "text,label\n" + "".join(f"row {i},a\n" for i in range(40))))
            + ["dataset.label_column=text"]
        ),
        "'text' has 40 distinct values in 40 rows",
        "set dataset.label_column to the column of class labels (columns: text, label)",
    ),
    "only_one_class": (
        lambda p: local(write_csv(p / "t.csv", "text,label\n" + "x,a\n" * 20)),
        "'label'",
        "only one class",
    ),
    "empty_split": (
        lambda p: local(write_csv(p / "t.csv", two_class_rows(40)), write_csv(p / "v.csv", "text,label\n")),
        "v.csv",
        "no rows",
    ),
    "too_few_rows_for_validation": (
        lambda p: local(write_csv(p / "t.csv", two_class_rows(6)), write_csv(p / "v.csv", two_class_rows(4))),
        "dataset.validation_fraction=0.1",
        "add rows or change the fraction",
    ),
    "non_utf8_csv": (
        lambda p: local(write_csv(p / "t.csv", "text,label\ncaf\xe9,a\nthé,b\n".encode("latin-1") * 10)),
        "t.csv",
        "re-save it as UTF-8",
    ),
    "malformed_csv": (
        lambda p: local(write_csv(p / "t.csv", two_class_rows(20) + '"unclosed,a\n' + two_class_rows(4)[11:])),
        "t.csv",
        "could not be parsed as csv",
    ),
    # pandas reads a first row with an extra field as index + shifted values: every text would be the wrong one.
    "row_with_more_fields_than_header": (
        lambda p: local(write_csv(p / "t.csv", "text,label\nhello, world,a\n" + two_class_rows(20)[11:])),
        "dataset.train_file=",
        "line 2 has 3 fields, the header 2 (text, label); quote texts that hold commas",
    ),
    "later_row_with_more_fields_than_header": (
        lambda p: local(write_csv(p / "t.csv", two_class_rows(20) + 'x,a,"unexpected",extra\n')),
        "dataset.train_file=",
        "line 22 has 4 fields, the header 2",
    ),
    "unknown_model_option": (lambda p: ["model=gpt9"], "model=gpt9", "choose one of bert_base, minilm, tiny"),
    "unknown_dataset_option": (lambda p: ["dataset=ag_newz"], "dataset=ag_newz", "choose one of ag_news, imdb, local"),
    "unknown_pruner_option": (
        lambda p: ["search.pruner=sometimes"],
        "search.pruner=sometimes",
        "expected one of [median",
    ),
    "space_low_above_high": (
        lambda p: [space_override(p, {"num_train_epochs": {"type": "int", "low": 4, "high": 2}})],
        "num_train_epochs",
        "low=4 is greater than high=2",
    ),
    "space_unknown_distribution": (
        lambda p: [space_override(p, {"learning_rate": {"type": "gaussian", "low": 1e-5, "high": 1e-3}})],
        "learning_rate",
        "needs `type` (one of categorical, int, float)",
    ),
    "space_batch_size_not_positive": (
        lambda p: [space_override(p, {"per_device_train_batch_size": {"type": "categorical", "choices": [16, 0]}})],
        "per_device_train_batch_size",
        "must be a positive number",
    ),
    "trainer_batch_size_not_positive": (
        lambda p: ["trainer.per_device_train_batch_size=0"],
        "trainer.per_device_train_batch_size=0",
        "positive",
    ),
    "storage_unreachable": (
        lambda p: ["search.storage=postgresql://postgres@127.0.0.1:1/x"],
        "search.storage=postgresql://",
        "cannot open",
    ),
    "finalize_unknown_study": (lambda p: ["mode=finalize"], "search.study_name=ag_news-tiny", "no such study"),
    "space_backbones_not_categorical": (
        lambda p: [space_override(p, {"model": {"type": "int", "low": 1, "high": 2}})],
        "space.yaml: model",
        "backbones are a categorical of distinct model names or directories",
    ),
    "space_backbone_unknown": (
        lambda p: [space_override(p, {"model": {"type": "categorical", "choices": ["tiny", "no_such_model"]}})],
        "space.yaml: model",
        "no_such_model is neither a model in conf/model/ (bert_base, minilm, tiny) nor a directory",
    ),
    "latency_budget_not_positive": (
        lambda p: ["registry.max_ms_per_text=0"],
        "registry.max_ms_per_text=0",
        "must be a positive number of milliseconds",
    ),
    "latency_budget_in_mode_train": (
        lambda p: ["mode=train", "registry.max_ms_per_text=5"],
        "registry.max_ms_per_text=5",
        "a budget picks among a search's measured trials",
    ),
    "n_trials_zero": (lambda p: ["search.n_trials=0"], "search.n_trials=0", "must be at least 1"),
    "n_trials_negative": (lambda p: ["search.n_trials=-2"], "search.n_trials=-2", "must be at least 1"),
    "timeout_negative": (lambda p: ["search.timeout=-1"], "search.timeout=-1", "positive number of seconds"),
    "registry_name_with_slash": (lambda p: ["registry.name=a/b"], "registry.name=a/b", "use letters, digits"),
    "study_name_with_quote": (lambda p: ['search.study_name="it\'s"'], "search.study_name=it's", "use letters, digits"),
    "study_name_escaping_outputs": (
        lambda p: ["search.study_name=x/../../../escaped"],
        "search.study_name=x/../../../escaped",
        "use letters, digits",
    ),
    "max_length_above_positions": (
        lambda p: ["dataset.max_length=1000"],
        "dataset.max_length=1000",
        "has 512 positions",
    ),
    "tracking_uri_unknown_scheme": (
        lambda p: ["tracking.uri=garbage://x"],
        "tracking.uri=garbage://x",
        "sqlite:///PATH.db",
    ),
    "model_dir_without_config": (
        lambda p: [f"model.name_or_path={(p / 'empty').mkdir() or p / 'empty'}"],
        "model.name_or_path=",
        "without config.json",
    ),
    "labels_differ_by_space_or_case": (
        lambda p: local(write_csv(p / "t.csv", "text,label\n" + "x,a\ny, a\nz,b\n" * 10)),
        "t.csv",
        "labels ' a' and 'a' differ only in surrounding spaces or letter case",
    ),
    "labels_differ_by_case": (
        lambda p: local(write_csv(p / "t.csv", "text,label\n" + "x,Pos\ny,pos\nz,neg\n" * 10)),
        "t.csv",
        "labels 'Pos' and 'pos' differ only",
    ),
    "every_text_empty": (
        lambda p: local(write_csv(p / "t.csv", "text,label\n" + ",a\n ,b\n" * 10)),
        "t.csv",
        "every text in dataset.text_columns=['text'] is empty",
    ),
    "text_columns_empty": (
        lambda p: ["dataset.text_columns=[]"],
        "dataset.text_columns=[]",
        "name at least one column",
    ),
    "group_by_length_min_batches_negative": (
        lambda p: ["trainer.group_by_length_min_batches=-1"],
        "trainer.group_by_length_min_batches=-1",
        "0 or more",
    ),
    "heartbeat_interval_zero": (lambda p: ["search.heartbeat_interval=0"], "search.heartbeat_interval=0", "positive"),
    "grace_period_zero": (lambda p: ["search.grace_period=0"], "search.grace_period=0", "positive"),
    "seed_negative": (lambda p: ["seed=-1"], "seed=-1", "must be between 0 and"),
    "label_column_of_mixed_kinds": (
        lambda p: local(
            write_csv(
                p / "t.jsonl",
                "".join(f'{{"text": "row {i}", "label": {v}}}\n' for i, v in enumerate(["1", '"spam"', "2"] * 10)),
            )
        ),
        "t.jsonl: 'label'",
        "holds values of mixed kinds (numbers and strings)",
    ),
    "label_not_a_whole_number": (
        lambda p: local(
            write_csv(p / "t.csv", "text,label\n" + "".join(f"row {i},{i % 2 + 0.5}\n" for i in range(20)))
        ),
        "t.csv: 'label'",
        "label 0.5 is not a whole number",
    ),
    "header_repeats_a_column": (
        lambda p: local(
            write_csv(p / "t.csv", "text,label,text\n" + "".join(f"a {i},{'xy'[i % 2]},b\n" for i in range(20)))
        ),
        "dataset.train_file=",
        "the header names column 'text' 2 times",
    ),
    "header_column_without_name": (
        lambda p: local(
            write_csv(p / "t.csv", ",text,label\n" + "".join(f"{i},a {i},{'xy'[i % 2]}\n" for i in range(20)))
        ),
        "dataset.train_file=",
        "column 1 of the header has no name",
    ),
    "column_in_other_case": (
        lambda p: local(write_csv(p / "t.csv", "Text,label\n" + "".join(f"a {i},{'xy'[i % 2]}\n" for i in range(20)))),
        "t.csv",
        "column 'text' not found (columns: Text, label) (did you mean 'Text'?)",
    ),
    "text_column_of_lists": (
        lambda p: local(
            write_csv(p / "t.jsonl", "".join(f'{{"text": ["a", "{i}"], "label": {i % 2}}}\n' for i in range(20)))
        ),
        "t.jsonl",
        "text column 'text' holds lists",
    ),
    "unknown_encoding": (lambda p: ["dataset.encoding=utf-9"], "dataset.encoding=utf-9", "no such encoding"),
    "fraction_out_of_range": (
        lambda p: ["dataset.validation_fraction=1.5"],
        "dataset.validation_fraction=1.5",
        "must be a fraction above 0 and below 1",
    ),
    "directory_under_a_file": (
        lambda p: [f"search.checkpoint_dir={write_csv(p / 'a_file', 'x')}/checkpoints"],
        "search.checkpoint_dir=",
        "a_file is a file, not a directory",
    ),
    "run_directory_under_a_file": (
        lambda p: [f"hydra.run.dir={write_csv(p / 'a_file', 'x')}/run"],
        "hydra.run.dir=",
        "a_file is a file, not a directory",
    ),
    "directory_not_writable": (
        lambda p: ["tracking.artifact_dir=/proc/pipeline/artifacts"],
        "tracking.artifact_dir=/proc/pipeline/artifacts",
        "cannot write in /proc",
    ),
    # Found by tests/test_fuzz.py: a traceback from Path.exists() on a name longer than the filesystem allows.
    "directory_name_too_long": (
        lambda p: [f"search.checkpoint_dir={p}/{'c' * 300}"],
        "search.checkpoint_dir=",
        "cannot be created (file name too long)",
    ),
    "sqlite_store_is_a_directory": (
        lambda p: [f"search.storage=sqlite:///{p}"],
        "search.storage=sqlite:///",
        "is a directory; name a database file",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_before_training_with_one_line(case, tmp_path, monkeypatch, capsys):
    make, names, says = CASES[case]
    overrides = make(tmp_path)
    if not any(o.startswith(("dataset=", "dataset.data_dir")) for o in overrides):
        overrides = [
            f"dataset.data_dir={write_ag_news_release(tmp_path / 'ok', {'train': ROWS, 'test': ROWS})}",
            *overrides,
        ]
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *overrides)
    assert_clean_failure(code, stderr, tmp_path, names, says)


@pytest.mark.parametrize("override", ["seed=-1", "dataset.max_length=0", "search.checkpoint_dir=/proc/x"])
def test_bad_config_leaves_no_run_directory(override, tmp_path, monkeypatch, capsys):
    """Checked before Hydra makes `outputs/<study>/<time>/`: failed commands used to leave one each."""
    data = f"dataset.data_dir={write_ag_news_release(tmp_path / 'ok', {'train': ROWS, 'test': ROWS})}"
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, data, override)
    assert code == 2 and stderr.startswith(f"error: {override}"), stderr
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlruns").exists()


def _existing_study(
    tmp_path: Path, direction: str = "maximize", space: dict | None = None, data: str | None = None
) -> list[str]:
    url = study_storage(tmp_path)
    (tmp_path / "mlruns").mkdir()
    if space is None and data is None:
        optuna.create_study(study_name="ag_news-tiny", storage=url, direction=direction)
    else:
        cfg = compose_config(f"search.storage={url}", "search.study_name=ag_news-tiny").search
        path = write_space(tmp_path, space) if space else cfg.space
        open_study(cfg, load_space(path), storage.open_storage(cfg), data_fingerprint=data)
    return [f"dataset.data_dir={write_ag_news_release(tmp_path / 'ok', {'train': ROWS, 'test': ROWS})}"]


def test_study_reused_with_another_space(tmp_path, monkeypatch, capsys):
    overrides = _existing_study(tmp_path, space={"num_train_epochs": {"type": "int", "low": 1, "high": 5}})
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *overrides)
    assert_clean_failure(code, stderr, tmp_path, "search.study_name=ag_news-tiny", "use a new search.study_name")


def test_study_reused_on_other_data(tmp_path, monkeypatch, capsys):
    overrides = _existing_study(tmp_path, data="sha256:the fingerprint of other rows")
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *overrides)
    assert_clean_failure(code, stderr, tmp_path, "search.study_name=ag_news-tiny", "created on other data")
    study = default_study(tmp_path, "ag_news-tiny")
    assert study.trials == [] and study.user_attrs["data"] == "sha256:the fingerprint of other rows"


def test_registered_model_reused_on_other_data(tmp_path, monkeypatch, capsys):
    # An absolute URI: this process keeps MLflow's store per URI string, and a relative sqlite path would
    # still open the database of the first in-process test that used it.
    uri = f"tracking.uri=sqlite:///{tmp_path}/mlruns/mlflow.db"
    data = f"dataset.data_dir={write_ag_news_release(tmp_path / 'ok', {'train': ROWS, 'test': ROWS})}"
    first = run_pipeline(tmp_path, *BASE, data, uri, "mode=train")
    assert first.returncode == 0, first.stderr[-2000:]
    other = f"dataset.data_dir={write_ag_news_release(tmp_path / 'other', {'train': ROWS, 'test': ROWS[::2]})}"
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, other, uri, "mode=train")
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1, stderr[-2000:]
    assert "registry.name=ag_news: version 1 was trained and scored on other data" in errors[0]
    client = mlflow_client(tmp_path)
    assert [str(v.version) for v in client.search_model_versions("name = 'ag_news'")] == ["1"]
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == 1  # no new run


def test_study_reused_with_another_direction(tmp_path, monkeypatch, capsys):
    overrides = _existing_study(tmp_path, direction="minimize")
    code, stderr = run_cli(monkeypatch, capsys, tmp_path, *overrides)
    assert_clean_failure(code, stderr, tmp_path, "search.study_name=ag_news-tiny", "minimises")
    study = default_study(tmp_path, "ag_news-tiny")
    assert study.trials == [] and study.user_attrs == {}  # the other study is left as it was


# What the user sees from the real process.
REAL_PROCESS_CASES = {
    "misspelt_key": (["search.n_trail=3"], "search.n_trail", "check the spelling"),
    "hub_unreachable_model": (["model=bert_base"], "model=bert_base", "offline, use model=minilm"),
    "hub_unreachable_dataset": (
        ["dataset=ag_news", "dataset.data_dir=null"],
        "dataset.hub_id=fancyzhx/ag_news",
        "offline, read local files",
    ),
}


@pytest.mark.parametrize("overrides, names, says", REAL_PROCESS_CASES.values(), ids=REAL_PROCESS_CASES)
def test_real_process_prints_one_line_and_exits_2(tmp_path, overrides, names, says):
    data = write_ag_news_release(tmp_path / "ok", {"train": ROWS, "test": ROWS})
    result = run_pipeline(tmp_path, *BASE, f"dataset.data_dir={data}", *overrides, timeout=120)
    assert_clean_failure(result.returncode, result.stderr, tmp_path, names, says)


def test_unreachable_tracking_server_fails_fast(tmp_path, monkeypatch, capsys):
    data = write_ag_news_release(tmp_path / "ok", {"train": ROWS, "test": ROWS})
    code, stderr = run_cli(
        monkeypatch, capsys, tmp_path, f"dataset.data_dir={data}", f"tracking.uri=http://127.0.0.1:{free_port()}"
    )
    # The message is the up-front probe's: MLflow's own retries (minutes of them) never started.
    assert_clean_failure(code, stderr, tmp_path, "tracking.uri=http://127.0.0.1:", "no tracking server answers")


def test_a_search_whose_every_trial_failed_says_why_in_one_line(tmp_path):
    """A searched value TrainingArguments rejects fails each trial; the end is one line with that error."""
    data = write_ag_news_release(tmp_path / "ok", {"train": ROWS, "test": ROWS})
    space = space_override(tmp_path, {"lr_scheduler_type": {"type": "categorical", "choices": ["sometimes"]}})
    result = run_pipeline(tmp_path, *BASE, f"dataset.data_dir={data}", space, "search.n_trials=2", timeout=200)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    assert "search.study_name=ag_news-tiny has no completed trial yet; 2 failed: ValueError" in errors[0], errors[0]
    assert "sometimes" in errors[0]
    assert "Traceback" not in result.stderr


def test_the_docs_bad_input_table_names_every_case_once():
    """docs/reliability.md's table and these tests, one to one: each row names its cases, each case one row."""
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    table = text[text.index("| input | message (abridged) | fix | test |") :].split("\n\n", 1)[0].splitlines()[2:]
    documented = [case for row in table for case in re.findall(r"`(\w+)`", row.rsplit(" | ", 1)[1])]
    drivers = {
        "bad_input_fails_before_training_with_one_line",
        "real_process_prints_one_line_and_exits_2",
        "the_docs_bad_input_table_names_every_case_once",
        "bad_config_leaves_no_run_directory",
    }
    functions = {
        name.removeprefix("test_") for name, f in globals().items() if name.startswith("test_") and callable(f)
    } - drivers
    elsewhere = {"a_test_split_lacking_training_classes_is_named_in_a_warning"}  # tests/test_data.py: a warning
    assert all(hasattr(test_data, f"test_{name}") for name in elsewhere)
    assert sorted(documented) == sorted({*CASES, *REAL_PROCESS_CASES, *functions, *elsewhere})
