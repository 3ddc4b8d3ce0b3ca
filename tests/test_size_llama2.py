"""benchmarks/size_llama2.py: the 7B LoRA count, the docs' table from the JSON, the formula.

The docs' GPU-memory figures are the rendering of docs/results/bench/size_llama2.json,
never typed by hand; the activation formula is checked against the tensors autograd actually
saves in a tiny 4-bit LoRA Llama on the CPU.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from tests.conftest import PROJECT_ROOT

spec = importlib.util.spec_from_file_location("size_llama2", PROJECT_ROOT / "benchmarks/size_llama2.py")
size = importlib.util.module_from_spec(spec)
spec.loader.exec_module(size)

needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")


@needs_bnb
def test_llama2_lora_has_the_published_trainable_count_and_the_json_is_current():
    params = size.llama2_training_params()
    model = size.build_model(params)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 159_907_840  # r=64 on q, k, v, o, gate, up, down of 32 layers
    result = json.loads(size.RESULT.read_text())
    assert result["parameters"]["trainable_lora"] == trainable
    assert result["settings"] == json.loads(json.dumps(size.settings(params)))  # conf unchanged since


def test_the_docs_table_is_the_rendering_of_the_json():
    """The block `results:bench:size_llama2` renders the record (tests/test_docs.py checks that
    the docs' block is up to date)."""
    from mift_kedro import results

    result = json.loads(size.RESULT.read_text())
    table = results.render_block(size.RESULT.parents[1], "bench", "size_llama2")
    assert f"**{result['parameters']['trainable_lora']:,} trainable parameters**" in table
    total = f"| **Total per process under DDP** | **{result['total_bytes_per_process_ddp'] / 2**30:.2f}** |"
    assert total in table


def _saved_bytes_per_token(model_dir, layers: int, dropout: float, tokens: int, dims: dict) -> tuple[int, set]:
    """Bytes of the token-sized tensors autograd saves in one bf16-autocast training forward."""
    from transformers import AutoModelForCausalLM

    from mift_kedro import models
    from mift_kedro.pipelines.training import nodes
    from mift_kedro.pipelines.training.params import training_params

    quantization = models.bnb_config("cpu")
    quantization.bnb_4bit_compute_dtype = torch.bfloat16  # as on a GPU
    model = AutoModelForCausalLM.from_pretrained(
        model_dir / str(layers), dtype=torch.bfloat16, quantization_config=quantization,
        device_map={"": "cpu"}, attn_implementation="sdpa",
    )
    params = training_params({"quantization": "4bit", "lora": {
        "r": dims["r"], "alpha": 16, "dropout": dropout,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}})
    model = nodes.add_lora(model, params, seed=0, gradient_checkpointing=False)
    model.train()

    kept = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}
    dtypes = set()

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in kept and tokens in tensor.shape:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    layer = model.get_base_model().model.layers[0]
    layer.register_forward_hook(lambda module, args, out: dtypes.add((out[0] if isinstance(out, tuple) else out).dtype))
    ids = torch.randint(0, dims["vocab"], (1, tokens))
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids, use_cache=False)
    return sum(saved.values()), dtypes


@needs_bnb
@pytest.mark.parametrize("dropout", [0.1, 0.0])
def test_layer_activation_formula_matches_autograds_saved_tensors(tmp_path, dropout):
    """One more decoder layer saves exactly the formula's bytes per token (CPU: 4-byte masks)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    dims = {"hidden": 128, "intermediate": 344, "heads": 4, "r": 8, "vocab": 300}
    tokens = 40  # no model dimension equals it, so only activations have it in their shape
    for layers in (1, 2):
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(
            vocab_size=dims["vocab"], hidden_size=dims["hidden"], intermediate_size=dims["intermediate"],
            num_hidden_layers=layers, num_attention_heads=dims["heads"], num_key_value_heads=dims["heads"],
            max_position_embeddings=64,
        )).to(torch.bfloat16).save_pretrained(tmp_path / str(layers))
    one, dtypes = _saved_bytes_per_token(tmp_path, 1, dropout, tokens, dims)
    two, _ = _saved_bytes_per_token(tmp_path, 2, dropout, tokens, dims)
    expected = size.layer_activation_bytes_per_token(
        dims["hidden"], dims["intermediate"], dims["r"], dims["heads"], dropout, mask_bytes=4
    )
    assert (two - one) == tokens * expected
    assert dtypes == {torch.float32}  # the residual stream: fp32, as the checkpoint term assumes


def test_lora_weights_gradients_and_adamw_states_are_counted_in_their_gpu_dtype(monkeypatch):
    """TRL casts QLoRA adapters to bf16 and the trainer keeps them in models.trainable_dtype:
    on an Ampere GPU, bf16 weights, gradients and AdamW states (2 bytes each, not fp32's 4)."""
    from types import SimpleNamespace

    from mift_kedro import models

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(major=8, minor=0))
    assert models.trainable_dtype("cuda:0") == getattr(torch, size.LORA_DTYPE) == torch.bfloat16
    result = json.loads(size.RESULT.read_text())
    lora = result["parameters"]["trainable_lora"] * 2
    memory = result["memory_bytes"]
    assert (memory["lora_weights"], memory["lora_gradients"], memory["adamw_states"]) == (lora, lora, 2 * lora)
    assert result["ddp_gradient_buckets_bytes"] == lora
    weight = torch.nn.Parameter(torch.zeros(4, dtype=torch.bfloat16))
    weight.grad = torch.ones_like(weight)
    optimizer = torch.optim.AdamW([weight])
    optimizer.step()
    assert {t.dtype for t in optimizer.state[weight].values() if t.dim()} == {torch.bfloat16}
