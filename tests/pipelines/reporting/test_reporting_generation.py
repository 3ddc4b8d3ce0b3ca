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


def _reference_greedy(model, tokenizer, prompt, max_new_tokens, with_count=False):
    """One prompt, no padding, plain ``generate``: the unbatched baseline (with ``with_count``
    also the tokens it generated, the end-of-turn token included)."""
    ids = torch.tensor([tokenize_prompt(tokenizer, render_prompt(tokenizer, prompt))])
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
        do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
    )
    new = out[0, ids.shape[1]:].tolist()
    count = len(new)
    if tokenizer.eos_token_id in new:
        new = new[: new.index(tokenizer.eos_token_id)]
        count = len(new) + 1
    text = tokenizer.decode(new, skip_special_tokens=True).strip()
    return (text, count) if with_count else text


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
        out = nodes.generate_predictions(
            "base-ref",
            {"sentiment": frame, "out_of_sample": frame.assign(label=None), "alpaca": frame.iloc[:1].assign(label=None)},
            params, 0, variant={"display_name": "FT-X"}, adapter=peft_model, model_name="x",
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


def _forward_calls(model):
    """Record (rows, length, real tokens) of each forward pass of ``model``: the tokens it computes
    (rows x length) and how many of them are prompt or answer tokens, not padding."""
    calls: list[tuple[int, int, int]] = []

    def record(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        real = ids.numel() if mask is None else int(mask[:, -ids.shape[1]:].sum())
        calls.append((ids.shape[0], ids.shape[1], real))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    return calls, handle


def test_shared_prefix_cache_changes_nothing_but_the_work(tiny_model):
    """Same answers with and without the cache; with it, the shared prefix reaches the model
    once instead of once per prompt (the tokens its forward passes receive show it)."""
    from mift_kedro.pipelines.reporting.generation import _shared_prefix

    model, tokenizer = tiny_model
    encoded = [tokenize_prompt(tokenizer, render_prompt(tokenizer, p)) for p in PROMPTS]
    shared = _shared_prefix(encoded)
    assert shared >= 8  # the chat template's system turn at least
    assert _shared_prefix(encoded[:1]) == 0
    calls, handle = _forward_calls(model)
    try:
        on = generate(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=3, progress=False)
        with_cache = sum(real for _, _, real in calls)
        first_call = calls[0]
        calls.clear()
        off = generate(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=3, progress=False,
                       prefix_cache=False)
    finally:
        handle.remove()
    assert on == off
    assert first_call == (1, shared, shared)  # the prefix alone, once
    assert sum(real for _, _, real in calls) - with_cache == shared * (len(PROMPTS) - 1)


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_greedy_answers_equal_plain_generate_per_prompt(tiny_model, prefix_cache):
    """Every prompt's answer and token count equal ``model.generate`` on that prompt alone,
    whatever the batch (rows leaving it, prefill in length groups, the prefix cache)."""
    model, tokenizer = tiny_model
    reference = [_reference_greedy(model, tokenizer, p, 12, with_count=True) for p in PROMPTS]
    for batch_size in (2, 5):
        out = generate(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=batch_size,
                       progress=False, prefix_cache=prefix_cache)
        assert [(g.prediction, g.completion_tokens) for g in out] == reference


def test_finished_rows_cost_nothing(tiny_model):
    """A row that has emitted its end-of-turn token leaves the batch: each decode step runs on
    exactly the rows still answering (``model.generate`` would run all five until the longest
    answer ends), and the prefill computes little padding."""
    model, tokenizer = tiny_model
    calls, handle = _forward_calls(model)
    try:
        out = generate(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=5, progress=False)
    finally:
        handle.remove()
    spent = [g.completion_tokens for g in out]
    assert min(spent) < max(spent)  # some rows finish early: the test means something
    decode = [rows for rows, length, _ in calls if length == 1]
    assert decode == [sum(n > step for n in spent) for step in range(1, max(spent))]
    prefill = [(rows * length, real) for rows, length, real in calls if length > 1]
    computed, real = map(sum, zip(*prefill, strict=True))
    assert computed <= 1.25 * real


def test_prefill_groups_rows_of_similar_length():
    from mift_kedro.pipelines.reporting.generation import _length_groups

    assert _length_groups([10, 11, 12, 40]) == [[0, 1, 2], [3]]
    assert _length_groups([20, 21, 22, 23]) == [[0, 1, 2, 3]]
    assert _length_groups([5]) == [[0]]


def test_sampling_is_seeded_and_uses_the_parameters(tiny_model):
    model, tokenizer = tiny_model
    hot = {"do_sample": True, "temperature": 1.5, "top_k": 50, "top_p": 0.95}
    run = [generate(model, tokenizer, PROMPTS, max_new_tokens=8, sampling=hot, seed=s, progress=False)
           for s in (1, 1, 2)]
    assert run[0] == run[1]
    assert run[0] != run[2]
    greedy = generate(model, tokenizer, PROMPTS, max_new_tokens=8, progress=False)
    assert run[0] != greedy
