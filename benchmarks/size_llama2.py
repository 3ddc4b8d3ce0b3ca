"""GPU memory per process of the llama2 QLoRA run, computed without a GPU (not measured).

Builds Llama-2-7B (its published sizes; no Hub, no weights) on the meta device, quantizes
its layout with transformers' bitsandbytes quantizer and applies the pipeline's own
``add_lora`` with the settings of ``conf/llama2/parameters_training.yml``, so the parameter
counts and dtypes are the libraries' own. Memory = those parameters' bytes (NF4 sizes from
bitsandbytes quantizing a tensor of each layer's size), LoRA gradients and AdamW states, and
activations from a stated formula. The assumptions are printed and kept in the JSON.

    python benchmarks/size_llama2.py            # compute, print, write docs/results/bench/size_llama2.json
    python -m mift_kedro.results render-readme  # the docs' block (results:bench:size_llama2) from it
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

RESULT = ROOT / "docs/results/bench/size_llama2.json"
GIB = 2**30

#: Llama-2-7b's published configuration (config.json of meta-llama/Llama-2-7b-chat-hf).
LLAMA2_7B = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
}

#: The LoRA weights' dtype in training on a GPU with bf16 (models.trainable_dtype there; see ASSUMPTIONS).
LORA_DTYPE = "bfloat16"

#: Bytes of one boolean dropout mask element kept by CUDA's fused dropout (CPU keeps a float mask).
CUDA_MASK_BYTES = 1

ASSUMPTIONS = [
    "Llama-2-7B's published sizes (32 layers, hidden 4096, MLP 11008, 32 heads, vocabulary 32000, "
    "untied LM head), built on the meta device: no weights, no Hub.",
    "4-bit: every linear layer but the LM head (transformers' bitsandbytes quantizer, run on the "
    "meta model); bytes per layer from bitsandbytes quantizing a tensor of that size with the "
    "project's BitsAndBytesConfig (NF4, double quantization): packed 4-bit weights, 8-bit block "
    "absmax, fp32 second-level absmax, codebooks and offset.",
    "Embeddings, LM head and norms in fp32, as prepare_model_for_kbit_training leaves them (dtypes "
    "read from the prepared meta model).",
    "LoRA weights in bf16 on a GPU with bf16 (Ampere or later): peft makes them fp32 on a quantized "
    "base, TRL casts them to bf16 and the trainer keeps them in models.trainable_dtype (bf16 there; "
    "fp32 on GPUs before Ampere, which train in fp16 mixed precision, where these three lines double); "
    "gradients and AdamW's two states per weight in the weights' dtype (torch.optim.AdamW makes its "
    "states like the parameter); under DDP (several processes) one more copy of the gradients in "
    "DDP's buckets.",
    "Activations at the per-process micro-batch training.batch_size, every sequence at "
    "training.max_length tokens (padding-free batches: N = batch x length tokens; an upper bound).",
    "Gradient checkpointing per decoder layer: each layer's input is kept in fp32 (the residual "
    "stream is fp32 because prepare_model_for_kbit_training casts the embeddings to fp32), plus "
    "the saved tensors of the one layer recomputed during backward.",
    "One decoder layer saves, per token, 28h + 14i + 14r + 4 heads + 8 bytes, plus (6h + i) dropout "
    "mask bytes when LoRA dropout > 0 (CUDA's fused dropout keeps 1-byte masks; CPU keeps 4) "
    "(h hidden, i MLP width, r LoRA rank): autograd's saved tensors of a 4-bit LoRA Llama layer "
    "under bf16 autocast with SDPA flash/memory-efficient attention (q, k, v, output and a "
    "log-sum-exp per head; no length x length matrix); tests/test_size_llama2.py checks it on CPU.",
    "LM head: the project's trainer computes logits only at response positions; bound used: "
    "every token a response token, N x vocabulary x 14 bytes (bf16 logits, their fp32 copy, the "
    "fp32 log-softmax kept for backward, its fp32 gradient), plus the final norm's fp32 input.",
    "Backward buffers: two fp32 hidden-state gradients (N x h x 4 each), and the largest 4-bit "
    "weight dequantized to bf16 for its matmul.",
    "Not counted: the CUDA context, the caching allocator's reserve and fragmentation, NCCL "
    "buffers (together often 1 GiB or more).",
]


def llama2_training_params() -> Any:
    """The `training` block of conf/llama2, validated as the pipeline validates it."""
    import yaml

    from mift_kedro.pipelines.training.params import training_params

    conf = yaml.safe_load((ROOT / "conf/llama2/parameters_training.yml").read_text())
    return training_params(conf["training"])


def settings(params: Any) -> dict[str, Any]:
    """What the figures depend on, as configured (and the examples per variant, for steps)."""
    import yaml

    variants = yaml.safe_load((ROOT / "conf/llama2/parameters.yml").read_text())["variants"]
    return {
        "budgets": {name: spec["budget"] for name, spec in variants.items()},
        "quantization": params.quantization,
        "lora": params.lora.model_dump(),
        "batch_size": params.batch_size,
        "max_length": params.max_length,
        "effective_batch_size": params.effective_batch_size,
        "gradient_checkpointing": params.gradient_checkpointing,
    }


def build_model(params: Any) -> Any:
    """Llama-2-7B on the meta device, 4-bit layout, prepared and wrapped as the pipeline does."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, LlamaConfig
    from transformers.quantizers import AutoHfQuantizer

    from mift_kedro import models
    from mift_kedro.pipelines.training import nodes

    if params.quantization != "4bit" or params.gradient_checkpointing is False:
        raise SystemExit("this sizing is for QLoRA with gradient checkpointing: conf/llama2 "
                         "training.quantization must be 4bit, training.gradient_checkpointing auto/true")
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(LlamaConfig(**LLAMA2_7B), dtype=torch.bfloat16)
        quantizer = AutoHfQuantizer.from_config(models.bnb_config("cpu"), pre_quantized=False)
        quantizer.preprocess_model(model, device_map={"": "cpu"}, dtype=torch.bfloat16)
        quantizer.postprocess_model(model)
        return nodes.add_lora(model, params, seed=0, gradient_checkpointing=True)


def nf4_bytes(numel: int) -> int:
    """Bytes bitsandbytes keeps for a 4-bit weight of ``numel`` elements (project settings)."""
    import bitsandbytes as bnb
    import torch

    from mift_kedro import models

    config = models.bnb_config("cpu")
    packed, state = bnb.functional.quantize_4bit(
        torch.zeros(numel, dtype=torch.bfloat16), quant_type=config.bnb_4bit_quant_type,
        compress_statistics=config.bnb_4bit_use_double_quant,
    )
    parts = [packed, state.absmax, state.code]
    if state.nested:
        parts += [state.offset, state.state2.absmax, state.state2.code]
    return sum(t.nbytes for t in parts)


def layer_activation_bytes_per_token(
    hidden: int, intermediate: int, rank: int, heads: int, dropout: float, mask_bytes: int
) -> int:
    """Bytes one decoder layer saves for backward per token (see ASSUMPTIONS)."""
    masks = (6 * hidden + intermediate) * mask_bytes if dropout > 0 else 0
    return 28 * hidden + 14 * intermediate + 14 * rank + 4 * heads + 8 + masks


def compute(params: Any) -> dict[str, Any]:
    import bitsandbytes as bnb
    import torch

    model = build_model(params)
    quantized = [m.weight.numel() for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    sizes = {numel: nf4_bytes(numel) for numel in sorted(set(quantized))}
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = [p for p in model.parameters() if not p.requires_grad and not isinstance(p, bnb.nn.Params4bit)]
    total_params = sum(p.numel() for p in model.parameters())
    lora_bytes = sum(p.numel() for p in trainable) * getattr(torch, LORA_DTYPE).itemsize  # as trained on a GPU

    h, i, L, V = (LLAMA2_7B[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size"))
    heads = LLAMA2_7B["num_attention_heads"]
    tokens = params.batch_size * params.max_length
    per_layer = layer_activation_bytes_per_token(h, i, params.lora.r, heads, params.lora.dropout, CUDA_MASK_BYTES)
    memory = {
        "nf4_weights": sum(sizes[n] for n in quantized),
        "fp32_embeddings_head_norms": sum(p.numel() * p.element_size() for p in frozen),
        "lora_weights": lora_bytes,
        "lora_gradients": lora_bytes,
        "adamw_states": 2 * lora_bytes,
        "activations_checkpointed_layer_inputs": L * tokens * h * 4,
        "activations_recomputed_layer": tokens * per_layer,
        "activations_lm_head": tokens * (V * 14 + h * 4),
        "backward_buffers": 2 * tokens * h * 4 + max(quantized) * 2,
    }
    one_process = sum(memory.values())
    return {
        "what": "GPU memory per process of `kedro run --env llama2` training, computed (not measured)",
        "command": "python benchmarks/size_llama2.py",
        "model": {"name": "Llama-2-7B (published sizes)", **LLAMA2_7B},
        "settings": settings(params),
        "parameters": {
            "total_with_lora": total_params,
            "quantized_4bit": sum(quantized),
            "fp32_frozen": sum(p.numel() for p in frozen),
            "trainable_lora": sum(p.numel() for p in trainable),
        },
        "activation_tokens_per_process": tokens,
        "layer_activation_bytes_per_token": per_layer,
        "lora_dtype": LORA_DTYPE,
        "memory_bytes": memory,
        "ddp_gradient_buckets_bytes": lora_bytes,
        "total_bytes_one_process": one_process,
        "total_bytes_per_process_ddp": one_process + lora_bytes,
        "assumptions": ASSUMPTIONS,
    }


def gib(value: int) -> str:
    return f"{value / GIB:.2f}"


def say(text: str) -> None:
    sys.stdout.write(text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    import logging

    from mift_kedro.results import render_memory

    logging.basicConfig(level=logging.WARNING)
    result = compute(llama2_training_params())
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    say(render_memory(result))
    say("\nAssumptions:")
    for n, line in enumerate(ASSUMPTIONS, 1):
        say(f"  {n}. {line}")
    say(f"\nWrote {RESULT.relative_to(ROOT)}; `python -m mift_kedro.results render-readme` updates the docs.")


if __name__ == "__main__":
    main()
