"""bf16 where the hardware has it: training's `trainer.bf16=auto`, and prediction's weights cast once at load."""
import pytest
import torch

from pipeline import classifier, model, precision
from tests.conftest import compose_config

LABELS = ["neg", "pos"]
TEXTS = ["the film was a delight", "a dull, long evening", "fine", "nothing works and nobody answers the phone"]


@pytest.fixture
def saved(tmp_path):
    cfg = compose_config("model=tiny").model
    torch.manual_seed(0)
    model.make_model_init(cfg, LABELS)().save_pretrained(tmp_path)
    model.load_tokenizer(cfg).save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("cpu_has_bf16", [True, False])
def test_auto_follows_the_cpu_for_training_and_prediction(monkeypatch, saved, cpu_has_bf16):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: cpu_has_bf16)
    assert precision.training_fields("auto")["bf16"] is cpu_has_bf16
    assert precision.training_fields(False) == {"bf16": False}
    loaded = classifier.load(str(saved), "")
    assert loaded.model.dtype == (torch.bfloat16 if cpu_has_bf16 else torch.float32)
    assert classifier.load(str(saved), "", quantize=True).model.classifier.weight().dtype == torch.qint8


def test_bf16_prediction_is_close_to_fp32(monkeypatch, saved):
    found = {}
    for has_bf16 in (False, True):
        monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: has_bf16)
        found[has_bf16] = classifier.load(str(saved), "").probabilities(TEXTS)
    assert found[True].dtype == found[False].dtype == "float32"
    assert abs(found[True] - found[False]).max() < 0.02
    assert found[True].sum(axis=1) == pytest.approx(1, abs=1e-5)
