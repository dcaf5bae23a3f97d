"""bf16 where the hardware has it: training's `trainer.bf16=auto` (and TF32 on a GPU), prediction's weights cast
once at load, on the device `--device` names."""

import pytest
import torch

from pipeline import classifier
from pipeline.errors import PipelineError
from pipeline.training import inference, model, precision
from pipeline.training.args import training_args
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
    assert precision.training_fields(False) == {"bf16": False, "tf32": None}
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


@pytest.mark.parametrize("has_cuda", [True, False])
def test_the_device_follows_the_flag_and_what_torch_sees(monkeypatch, has_cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_cuda)
    assert classifier.device_for("auto") == torch.device("cuda" if has_cuda else "cpu")
    assert classifier.device_for("cpu") == torch.device("cpu")
    assert classifier.device_for("auto", quantize=True) == torch.device("cpu")  # int8 runs on the CPU
    if has_cuda:
        assert classifier.device_for("cuda") == torch.device("cuda")
        with pytest.raises(
            PipelineError, match="--quantize with --device=cuda: int8 quantization runs on the CPU only"
        ):
            classifier.device_for("cuda", quantize=True)
    else:
        with pytest.raises(PipelineError, match="--device=cuda: torch sees no CUDA device here"):
            classifier.device_for("cuda")
    with pytest.raises(PipelineError, match="--device=gpu: choose one of auto, cpu, cuda"):
        classifier.device_for("gpu")


def test_a_loaded_classifier_is_on_the_chosen_device_and_says_so(saved, monkeypatch):
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    loaded = classifier.load(str(saved), "", device="cpu")
    assert loaded.device == torch.device("cpu") and loaded.where() == "cpu (float32)"
    assert classifier.load(str(saved), "", quantize=True).where() == "cpu (int8 quantized)"


@pytest.mark.parametrize("capability, tf32", [((9, 0), True), ((8, 0), True), ((7, 5), None)])
def test_on_a_gpu_auto_trains_in_bf16_with_tf32_from_ampere_on(monkeypatch, capability, tf32):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation or capability >= (8, 0)
    )
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    fields = precision.training_fields("auto", "auto")
    assert fields == {"bf16": capability >= (8, 0), "tf32": tf32}  # no use_cpu: the Trainer takes the GPU
    assert precision.training_fields("auto", False)["tf32"] is False  # trainer.tf32=false is kept


def test_training_and_prediction_leave_cudnn_out_of_attention(saved):
    """cuDNN's attention plans each new sequence length anew (7x slower steps on an H200 with per-batch padding)."""
    cfg = compose_config("model=tiny")
    try:
        for use in (lambda: training_args(cfg.trainer, str(saved), 0), lambda: classifier.load(str(saved), "")):
            torch.backends.cuda.enable_cudnn_sdp(True)
            use()
            assert not torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(True)


def test_precision_names_the_weights_dtype_whatever_the_device_has(monkeypatch, saved):
    """`--precision fp32` gives full-precision scores where auto would pick bf16 (in bf16, 50 texts' scores took
    20 distinct values); bf16 is there to ask for; anything else is one error line."""
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    assert classifier.load(str(saved), "", precision_choice="fp32").model.dtype == torch.float32
    assert classifier.load(str(saved), "", precision_choice="auto").model.dtype == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    assert classifier.load(str(saved), "", precision_choice="bf16").model.dtype == torch.bfloat16
    with pytest.raises(PipelineError, match="--precision=fp8: choose one of auto, fp32, bf16"):
        classifier.load(str(saved), "", precision_choice="fp8")


def test_batched_probabilities_are_each_texts_own_in_the_order_given(saved):
    """Batches padded to their longest text give each text the probabilities it gets alone, unpadded, in the
    order of the texts (not the length order batches are made in)."""
    loaded = classifier.load(str(saved), "", precision_choice="fp32")
    texts = [text * repeat for repeat in (3, 1, 5, 2) for text in TEXTS] + [""]
    batched = loaded.probabilities(texts, batch_size=3)
    alone = [
        torch.softmax(loaded.model(**loaded.tokenizer(text, truncation=True, return_tensors="pt")).logits, -1)[0]
        for text in texts
    ]
    assert batched.shape == (len(texts), len(LABELS))
    assert batched == pytest.approx(torch.stack(alone).detach().numpy(), abs=1e-5)
    assert loaded.probabilities([]).shape == (0, len(LABELS))


@pytest.mark.parametrize("left", [False, True])
def test_a_batch_is_padded_on_the_tokenizers_side_as_tokenizer_pad_does(saved, left):
    tokenizer = classifier.load(str(saved), "").tokenizer
    tokenizer.padding_side = "left" if left else "right"
    batch = tokenizer(TEXTS)["input_ids"]
    input_ids, attention_mask = inference.Padding(tokenizer.pad_token_id, left, torch.device("cpu"))(batch)
    expected = tokenizer.pad({"input_ids": batch}, return_tensors="pt")
    assert torch.equal(input_ids, expected["input_ids"]) and torch.equal(attention_mask, expected["attention_mask"])


def test_without_a_padding_token_only_texts_of_one_length_share_a_batch():
    pad = inference.Padding(None, False, torch.device("cpu"))
    assert pad([[101, 7, 102], [101, 8, 102]])[1].tolist() == [[1, 1, 1], [1, 1, 1]]
    with pytest.raises(PipelineError, match="tokenizer has no padding token.*or use --batch-size 1"):
        pad([[101, 7, 102], [101, 102]])
