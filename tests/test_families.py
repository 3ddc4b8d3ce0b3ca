"""Any chat model by one parameter: each family's tiny stand-in (tests/families.py) through the
pipeline's own steps, offline: its template renders, the prompt/completion boundary, the system
prompt policy, labels on the answer and end-of-turn only, one QLoRA step, generation that stops
at the family's end-of-turn token; per-example attention with sliding windows and soft-capping."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from mift_kedro import chat, models
from mift_kedro.pipelines.reporting.generation import generate
from mift_kedro.pipelines.training import nodes
from mift_kedro.pipelines.training.params import training_params
from tests.families import FAMILIES, build

SYSTEM = chat.system_message("Reply with one word.")
PROMPT = chat.user_message("Classify the sentiment of the following tweet.", "what a lovely day")
ANSWER = chat.assistant_message("positive")


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory, shared_data):
    spec = FAMILIES[request.param]
    return spec, build(spec, shared_data, tmp_path_factory.mktemp("families") / spec.name)


def test_template_boundary_system_policy_and_end_of_turn(family):
    spec, model_dir = family
    tokenizer = models.load_tokenizer(str(model_dir))
    assert chat.system_policy(tokenizer) == spec.system
    prompt_text, completion_text = chat.render_example(tokenizer, SYSTEM + PROMPT, ANSWER)
    assert prompt_text.endswith(spec.prompt_end)
    assert completion_text.startswith("positive" + spec.end_of_turn)
    assert "Reply with one word." in prompt_text  # its own system turn, or opening the user turn
    if spec.system == "merged":
        assert "Reply with one word.\n\nClassify the sentiment" in prompt_text
    assert chat.end_of_turn_ids(tokenizer) == [tokenizer.convert_tokens_to_ids(spec.end_of_turn)]
    encoded = chat.tokenize_example(tokenizer, SYSTEM + PROMPT, ANSWER)
    labelled = [t for t, m in zip(encoded["input_ids"], encoded["completion_mask"], strict=True) if m]
    assert tokenizer.decode(labelled) == completion_text  # the answer and the end of turn, nothing else
    if spec.bos:  # once where the template writes it, never added a second time
        assert tokenizer.decode(encoded["input_ids"]).count(spec.bos) == ("bos_token" in spec.template_text())


def tiny_params(tmp_path, **overrides):
    return training_params({
        "quantization": "4bit", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "max_steps": 1,
        "effective_batch_size": 4, "batch_size": 4, "learning_rate": 1e-3, "max_length": 128,
        "checkpoint_dir": str(tmp_path / "checkpoints"), "torch_threads": 1, **overrides,
    })


def rows(n: int = 4) -> pd.DataFrame:
    tweets = ["i love this sunny day", "worst commute ever", "great game tonight!", "my phone broke"]
    return pd.DataFrame({
        "prompt": [SYSTEM + chat.user_message("Classify the sentiment.", tweets[i % 4]) for i in range(n)],
        "completion": [chat.assistant_message("positive" if i % 2 else "negative") for i in range(n)],
    })


def test_one_qlora_step_with_labels_on_the_answer_and_generation_stopping_at_end_of_turn(family, tmp_path):
    spec, model_dir = family
    params = tiny_params(tmp_path)
    setup = nodes.training_setup(params)
    tokenizer = models.load_tokenizer(str(model_dir))
    model = nodes.model_with_adapter(str(model_dir), params, 0, setup)
    assert models.loaded_quantization(model) == "4bit"
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)  # all-linear: every projection of the family
    data = rows()
    trainer = nodes.build_trainer(model, tokenizer, nodes.training_data(data, tokenizer), params, tmp_path / "out",
                                  0, setup, spec.name)
    first = trainer.train_dataset[0]
    expected = chat.tokenize_example(tokenizer, data["prompt"][0], data["completion"][0])
    assert first["input_ids"] == expected["input_ids"]  # TRL's tokenization is the pipeline's
    assert [t != -100 for t in first["labels"]] == [bool(m) for m in expected["completion_mask"]]
    _, completion_text = chat.render_example(tokenizer, data["prompt"][0], data["completion"][0])
    assert tokenizer.decode([t for t in first["labels"] if t != -100]) == completion_text  # answer + end of turn
    result = trainer.train()
    assert result.global_step == 1 and math.isfinite(result.training_loss)

    adapter = nodes.finished_adapter(trainer)
    end_of_turn = tokenizer.convert_tokens_to_ids(spec.end_of_turn)
    head = adapter.get_base_model().get_output_embeddings()
    after = {"steps": 0}

    def end_on_third_token(module, inputs, output):  # the model answers two tokens, then ends its turn
        after["steps"] += 1
        if after["steps"] >= 3:
            output[..., end_of_turn] = output.max() + 10
        return output

    hook = head.register_forward_hook(end_on_third_token)
    try:
        [answer] = generate(adapter, tokenizer, [data["prompt"][0]], max_new_tokens=8, progress=False, prefix_cache=False)
    finally:
        hook.remove()
    assert answer.completion_tokens == 3  # two tokens and the end of turn: it stopped there
    assert answer.prompt_text == chat.render_prompt(tokenizer, data["prompt"][0])


@pytest.mark.parametrize("name", ["mistral", "gemma2"])
def test_packed_attention_equals_the_models_own_per_example(name, tmp_path, shared_data):
    """Two examples longer than the sliding window (16) in one padding-free row: the per-example
    attention gives the logits the model's own eager attention gives each example alone
    (Gemma-2: soft-capped attention logits too)."""
    from transformers import AutoModelForCausalLM

    from mift_kedro.pipelines.training.trainer import register_packed_attention

    model_dir = build(FAMILIES[name], shared_data, tmp_path / name)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    examples = [torch.randint(10, vocab, (n,), generator=generator) for n in (40, 23)]
    with torch.no_grad():
        alone = [model(input_ids=ids[None]).logits[0] for ids in examples]
        model.set_attn_implementation(register_packed_attention())
        bounds = torch.tensor([0, 40, 63], dtype=torch.int32)
        packed = model(
            input_ids=torch.cat(examples)[None], position_ids=torch.cat([torch.arange(40), torch.arange(23)])[None],
            cu_seq_lens_q=bounds, cu_seq_lens_k=bounds, max_length_q=40, max_length_k=40,
        ).logits[0]
    torch.testing.assert_close(packed, torch.cat(alone), rtol=1e-4, atol=1e-4)


def test_qwen3_thinking_is_off_unless_configured(tmp_path, shared_data):
    from mift_kedro.datasets import BaseModelDataset

    model_dir = build(FAMILIES["qwen3"], shared_data, tmp_path / "qwen3")
    off = models.load_tokenizer(str(model_dir))
    assert chat.render_prompt(off, PROMPT).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    record = tmp_path / "record"
    source = models.ModelSource("local", str(model_dir), chat_template_kwargs={"enable_thinking": True})
    BaseModelDataset(filepath=str(record)).save(source)
    on = models.load_tokenizer(str(record))
    assert chat.render_prompt(on, PROMPT).endswith("<|im_start|>assistant\n")


def test_unsupported_architecture_or_missing_template_stops_naming_the_fix(tmp_path, llama2_sp_tokenizer_dir):
    from transformers import AutoTokenizer, T5Config

    from tests.conftest import save_model_dir

    t5 = tmp_path / "t5"  # an encoder-decoder: no causal LM
    T5Config(vocab_size=100, d_model=16, num_layers=1, num_heads=2).save_pretrained(t5)
    with pytest.raises(models.UnsupportedModelError, match=r"'t5'.*causal LM.*base_model.name"):
        models.check_supported(models.ModelSource("local", str(t5)))
    plain = tmp_path / "plain"

    save_model_dir(plain, AutoTokenizer.from_pretrained(llama2_sp_tokenizer_dir), hidden_size=16)
    with pytest.raises(models.UnsupportedModelError, match="no chat template.*base_model.chat_template"):
        models.check_supported(models.ModelSource("local", str(plain)))
    models.check_supported(models.ModelSource("local", str(plain), chat_template="{{ messages }}"))  # configured


def test_preflight_stops_before_the_first_node_on_an_unsupported_model(tmp_path, monkeypatch, shared_data):
    """The Hub preflight hook checks the configured base model of a run that prepares it."""
    from kedro.config import OmegaConfigLoader
    from kedro.io import DataCatalog
    from transformers import T5Config

    from mift_kedro.hooks import HubPreflightHooks
    from mift_kedro.pipelines.training import create_pipeline
    from tests.conftest import PROJECT_ROOT

    t5 = tmp_path / "t5"
    T5Config(vocab_size=100, d_model=16, num_layers=1, num_heads=2).save_pretrained(t5)
    monkeypatch.setenv("MIFT_DATA_DIR", str(shared_data))
    conf = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local")
    catalog = DataCatalog.from_config(conf["catalog"])
    catalog["parameters"] = {**conf["parameters"], "base_model": {"source": "local", "name": str(t5)}}
    with pytest.raises(models.UnsupportedModelError, match="causal LM"):
        HubPreflightHooks().before_pipeline_run({}, create_pipeline(variants=["custom_only"]), catalog)
