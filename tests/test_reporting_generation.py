"""reporting: batched generation on a tiny random model (and a LoRA adapter on it)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from mift_kedro.chat import render_prompt, tokenize_prompt, user_message
from mift_kedro.pipelines.reporting import nodes
from mift_kedro.pipelines.reporting.generation import generate, generation_kwargs
from tests.conftest import tiny_llama

PROMPTS = [
    user_message("Classify the sentiment.", "I love it"),
    user_message("Write a very long poem about the sea, the sky and everything in between."),
    user_message("Hi"),
    user_message("Translate into French.", "The library opens at nine o'clock every morning."),
    user_message("Sum", "2 + 2"),
]


@pytest.fixture(scope="module")
def tiny_model(embedded_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_tokenizer_dir)
    model = tiny_llama(tokenizer, 48).eval()
    # A few prompts should end early: make the end-of-turn token likely after some tokens.
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] *= 3.0
    return model, tokenizer


def _reference_greedy(model, tokenizer, prompt, max_new_tokens):
    """One prompt, no padding, plain ``generate``: the unbatched baseline."""
    ids = torch.tensor([tokenize_prompt(tokenizer, render_prompt(tokenizer, prompt))])
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
        do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
    )
    new = out[0, ids.shape[1]:].tolist()
    if tokenizer.eos_token_id in new:
        new = new[: new.index(tokenizer.eos_token_id)]
    return tokenizer.decode(new, skip_special_tokens=True).strip()


def test_batched_and_unbatched_greedy_generation_agree(tiny_model):
    model, tokenizer = tiny_model
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=4, progress=False)
    single = generate(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=1, progress=False)
    assert [g.prediction for g in batched] == [g.prediction for g in single]
    assert [g.completion_tokens for g in batched] == [g.completion_tokens for g in single]
    assert [g.prediction for g in single] == [_reference_greedy(model, tokenizer, p, 12) for p in PROMPTS]
    for gen, prompt in zip(batched, PROMPTS, strict=True):
        assert gen.prompt_text == render_prompt(tokenizer, prompt)  # the shared chat template
        assert gen.prompt_tokens == len(tokenize_prompt(tokenizer, gen.prompt_text))
        assert 1 <= gen.completion_tokens <= 12


def test_lora_adapter_generates_the_same_batched_and_unbatched(tiny_model, monkeypatch):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny_model
    torch.manual_seed(1)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    ).eval()
    try:
        batched = generate(peft_model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=5, progress=False)
        single = generate(peft_model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=1, progress=False)
        assert [g.prediction for g in batched] == [g.prediction for g in single]

        # The variant node: base's tokenizer, the eval sets, one row per (eval_set, example).
        from mift_kedro import models

        monkeypatch.setattr(models, "load_tokenizer", lambda ref: tokenizer)
        frame = pd.DataFrame(
            {"id": ["a", "b"], "source": "sentiment", "prompt": PROMPTS[:2],
             "completion": [[{"role": "assistant", "content": "positive"}]] * 2, "label": [1, 0]}
        )
        params = {"max_new_tokens": {"sentiment": 3, "out_of_sample": 5, "alpaca": 5}, "batch_size": 2}
        out = nodes.generate_variant_predictions(
            peft_model, "base-ref", frame, frame.assign(label=None), frame.iloc[:1].assign(label=None),
            params, 0, {"display_name": "FT-X"}, {"quantization": "none"}, {"x": {}}, model_name="x",
        )
    finally:
        peft_model.unload()
    assert list(out.columns) == nodes.PREDICTION_COLUMNS
    assert len(out) == 2 + 2 + 1
    assert set(out["model"]) == {"x"} and set(out["display_name"]) == {"FT-X"}
    assert (out.loc[out["eval_set"] == "sentiment", "completion_tokens"] <= 3).all()
    assert list(out.loc[out["eval_set"] == "sentiment", "label"]) == [1, 0]
    assert out["reference"].eq("positive").all()
    assert out["prompt"].iloc[0].startswith("Classify the sentiment.")
    assert set(out["base_quantization"]) == {"none"} and out["base_checksum"].nunique() == 1


def test_sampling_settings_come_from_parameters():
    assert generation_kwargs(None) == {"do_sample": False, "num_beams": 1}
    assert generation_kwargs({"do_sample": False, "temperature": 0.3}) == {"do_sample": False, "num_beams": 1}
    kwargs = generation_kwargs({"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 20})
    assert kwargs == {"do_sample": True, "num_beams": 1, "temperature": 0.7, "top_p": 0.9, "top_k": 20}


def _tokens_received(model, monkeypatch) -> list[int]:
    """Record the number of tokens (batch x length) each forward pass of ``model`` receives."""
    counts: list[int] = []
    forward = model.forward

    def counting_forward(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        counts.append(ids.numel())
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting_forward)
    return counts


def test_shared_prefix_cache_changes_nothing_but_the_work(tiny_model, monkeypatch):
    """Same answers with and without the cache; with it, the shared prefix reaches the model
    once instead of once per prompt (the tokens its forward passes receive show it)."""
    from mift_kedro.pipelines.reporting.generation import _shared_prefix

    model, tokenizer = tiny_model
    encoded = [tokenize_prompt(tokenizer, render_prompt(tokenizer, p)) for p in PROMPTS]
    shared = _shared_prefix(encoded)
    assert shared >= 8  # the chat template's system turn at least
    assert _shared_prefix(encoded[:1]) == 0
    received = _tokens_received(model, monkeypatch)
    on = generate(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=3, progress=False)
    with_cache, calls_with_cache = sum(received), received.copy()
    received.clear()
    off = generate(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=3, progress=False,
                   prefix_cache=False)
    assert on == off
    assert calls_with_cache[0] == shared  # the prefix alone, once
    assert sum(received) - with_cache == shared * (len(PROMPTS) - 1)
