"""Which dtype a device computes in, and which the LoRA weights train in: the GPU capability
is mocked (sm_75 Turing, sm_80 Ampere, sm_90 Hopper) and the CPU is this machine's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mift_kedro import models
from mift_kedro.pipelines.training.params import training_params


def mock_gpu(monkeypatch, major: int, minor: int) -> None:
    """A CUDA device of compute capability ``major.minor`` on which bf16 tensors can be made
    (Turing emulates bf16: ``is_bf16_supported()`` says True there)."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(major=major, minor=minor))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)


@pytest.mark.parametrize(
    ("capability", "compute", "trainable"),
    [((7, 5), torch.float16, torch.float32), ((8, 0), torch.bfloat16, torch.bfloat16),
     ((9, 0), torch.bfloat16, torch.bfloat16)],
    ids=["sm_75", "sm_80", "sm_90"],
)
def test_gpu_precision_by_capability(monkeypatch, capability, compute, trainable):
    mock_gpu(monkeypatch, *capability)
    assert models.compute_dtype("cuda:0") == compute
    assert models.trainable_dtype("cuda:0") == trainable
    assert models.bnb_config("cuda:0").bnb_4bit_compute_dtype == compute


def test_cpu_computes_and_trains_in_fp32():
    assert models.compute_dtype("cpu") == torch.float32
    assert models.trainable_dtype("cpu") == torch.float32


def test_fp16_compute_keeps_trained_lora_weights_in_fp32(monkeypatch, llama2_sp_tokenizer, tmp_path):
    """On an sm_75 GPU TRL casts QLoRA adapters to bf16 and fp16 mixed precision then fails
    ("Attempting to unscale FP16 gradients"): the trainer must leave them in fp32. Built here on
    the CPU with the trainable dtype of an sm_75 GPU."""
    import pandas as pd

    from mift_kedro.chat import assistant_message, user_message
    from mift_kedro.pipelines.training import nodes
    from mift_kedro.pipelines.training.trainer import VariantSFTTrainer
    from tests.conftest import LLAMA2_CHAT_TEMPLATE, tiny_llama

    llama2_sp_tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE
    llama2_sp_tokenizer.pad_token = llama2_sp_tokenizer.eos_token
    params = training_params({"quantization": "none", "max_steps": 1, "effective_batch_size": 2, "batch_size": 2, "lora": {"r": 2}})
    model = nodes.add_lora(tiny_llama(llama2_sp_tokenizer, 16), params, seed=0, gradient_checkpointing=False)
    for name, param in model.named_parameters():  # as TRL leaves a QLoRA adapter
        if param.requires_grad:
            param.data = param.data.to(torch.float16)
    frame = pd.DataFrame({"prompt": [user_message("Say hi.")] * 2, "completion": [assistant_message("hi")] * 2})
    mock_gpu(monkeypatch, 7, 5)
    trainable = models.trainable_dtype("cuda:0")
    monkeypatch.undo()
    trainer = VariantSFTTrainer(
        model=model, args=nodes.sft_config(params, tmp_path, 0, "cpu", False), train_dataset=nodes.training_data(frame),
        processing_class=llama2_sp_tokenizer, max_length=64, overlong="drop", trainable_dtype=trainable,
    )
    dtypes = {p.dtype for p in trainer.model.parameters() if p.requires_grad}
    assert dtypes == {torch.float32}


def test_a_variant_loads_its_model_after_the_previous_ones_memory_is_freed(monkeypatch, llama2_sp_tokenizer, tmp_path):
    """Two variants train in one process: the first's model, trainer and optimizer states must
    be collected and the CUDA cache emptied before the second base model loads."""
    import gc

    from mift_kedro.pipelines.training import nodes
    from tests.conftest import tiny_llama

    events: list[str] = []
    monkeypatch.setattr(gc, "collect", lambda *args: events.append("gc") or 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: events.append("empty_cache"))
    monkeypatch.setattr(models, "load_causal_lm", lambda *args, **kwargs: events.append("load") or tiny_llama(llama2_sp_tokenizer, 16))
    params = training_params({"quantization": "none", "lora": {"r": 2}})
    setup = nodes.Setup(None, nodes.batch_plan(params, 1), "cpu", False, None)
    nodes.model_with_adapter(str(tmp_path), params, 0, setup)
    assert events[:3] == ["gc", "empty_cache", "load"]
