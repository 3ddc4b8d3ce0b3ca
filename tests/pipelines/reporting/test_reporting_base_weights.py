"""One set of base weights for every row: signatures, the adapter on the base row's base, and
the scoring step's refusal (tiny random Llamas, 4-bit through bitsandbytes on the CPU)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest
import torch

from mift_kedro import models
from mift_kedro.chat import assistant_message, user_message
from mift_kedro.config import ParameterError
from mift_kedro.datasets import AdapterDataset
from mift_kedro.pipelines.reporting import nodes
from tests.conftest import tiny_llama
from tests.pipelines.reporting.test_reporting import EVAL_SETS, SOURCES

pytestmark = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")

PARAMS = {"max_new_tokens": {"sentiment": 2, "out_of_sample": 2, "alpaca": 2}, "batch_size": 2,
          "device": "cpu", "torch_threads": 1, "quantization": "auto"}
VARIANTS = {"v": {"display_name": "FT-V", "budget": 4, "mix": {"sentiment": 1.0}}}


def _save_base(out: Path, tokenizer, shift: float = 0.0) -> Path:
    model = tiny_llama(tokenizer, 64)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(shift)  # another base of the same architecture
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def bases(tmp_path_factory, embedded_tokenizer_dir) -> tuple[str, str]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_tokenizer_dir)
    root = tmp_path_factory.mktemp("bases")
    return str(_save_base(root / "a", tokenizer)), str(_save_base(root / "b", tokenizer, shift=0.01))


def _adapter(base, seed: int = 1):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))


def _saved_adapter(ref: str, quantization: str, path: Path) -> AdapterDataset:
    dataset = AdapterDataset(filepath=str(path))
    dataset.save(_adapter(models.load_causal_lm(ref, quantization, "cpu")))
    return dataset


def _frames() -> list[pd.DataFrame]:
    sentiment = pd.DataFrame({
        "id": ["s1", "s2"], "prompt": [user_message("Classify.", "I love it"), user_message("Classify.", "awful")],
        "completion": [assistant_message("positive"), assistant_message("negative")], "label": [1, 0],
    })
    other = pd.DataFrame({"id": ["o1"], "prompt": [user_message("Say hi.")],
                          "completion": [assistant_message("hi")], "label": [None]})
    return [sentiment, other, other.assign(id="a1")]


def _sets() -> dict[str, pd.DataFrame]:
    """The evaluation sets by name, as the collect_eval_sets node gives them to generation."""
    return nodes.collect_eval_sets(*_frames(), names=["sentiment", "out_of_sample", "alpaca"])


def test_signature_tells_quantization_and_bases_apart_and_ignores_lora(bases):
    a, b = bases
    fp32 = models.base_weights_signature(models.load_causal_lm(a, "none", "cpu"))
    assert fp32 == models.base_weights_signature(models.load_causal_lm(a, "none", "cpu"))  # reproducible
    assert (fp32["base_ref"], fp32["base_quantization"], fp32["base_dtype"]) == (a, "none", "float32")
    nf4_model = models.load_causal_lm(a, "4bit", "cpu")
    nf4 = models.base_weights_signature(nf4_model)
    assert nf4["base_quantization"] == "4bit" and nf4["base_checksum"] != fp32["base_checksum"]
    other = models.base_weights_signature(models.load_causal_lm(b, "none", "cpu"))
    assert other["base_checksum"] != fp32["base_checksum"]
    # an adapter (non-zero LoRA weights) on the base: the same base weights
    assert models.base_weights_signature(_adapter(models.load_causal_lm(a, "none", "cpu"))) == fp32
    assert models.base_weights_signature(_adapter(nf4_model)) == nf4


def test_signature_covers_large_tensors_to_their_last_byte():
    module = torch.nn.Module()
    module.weight = torch.nn.Parameter(torch.zeros(2**23))  # 2**25 bytes: past float32's exact integers
    before = models.base_weights_signature(module)
    with torch.no_grad():
        module.weight[-1] = 1.0  # only the last bytes change
    assert models.base_weights_signature(module)["base_checksum"] != before["base_checksum"]
    with torch.no_grad():
        module.weight[-1], module.weight[12345] = 0.0, 1.0  # a byte between the samples
    assert models.base_weights_signature(module)["base_checksum"] != before["base_checksum"]  # the byte sum


@pytest.mark.slow
def test_every_row_generates_on_the_base_the_adapters_were_trained_on(bases, tmp_path):
    a, _ = bases
    qlora = _saved_adapter(a, "4bit", tmp_path / "adapter")
    adapter = qlora.load()  # reloaded as trained: on an NF4 base
    # auto: the adapter's own record (4bit), and for the base row what the adapter ran on
    variant = nodes.generate_predictions(a, _sets(), PARAMS, 0, variant=VARIANTS["v"], adapter=adapter, model_name="v")
    assert nodes.base_quantization(PARAMS, variant) == "4bit"
    base = nodes.generate_predictions(a, _sets(), PARAMS, 0, display_name="Base",
                                      quantization=nodes.base_quantization(PARAMS, variant))
    rows = pd.concat([base, variant])
    assert set(rows["base_quantization"]) == {"4bit"} and rows["base_checksum"].nunique() == 1
    nodes.check_same_base(rows)

    # reporting.quantization: none evaluates the QLoRA adapter on the fp32 base, like the base row
    forced = {**PARAMS, "quantization": "none"}
    moved = nodes.generate_predictions(a, _sets(), forced, 0, variant=VARIANTS["v"], adapter=qlora.load(), model_name="v")
    base_fp32 = nodes.generate_predictions(a, _sets(), forced, 0, display_name="Base",
                                           quantization=nodes.base_quantization(forced, moved))
    assert set(moved["base_quantization"]) == {"none"}
    nodes.check_same_base(pd.concat([base_fp32, moved]))
    # ...with the adapter's own LoRA weights: as if it had been loaded onto that base directly
    from peft import get_peft_model_state_dict

    original = qlora.load()
    assert models.on_base(original, a, "4bit", "cpu") is original  # NF4 as asked: not reloaded
    rehomed = models.on_base(original, a, "none", "cpu")
    assert models.loaded_quantization(original) == "4bit" and models.loaded_quantization(rehomed) == "none"
    lora = get_peft_model_state_dict(original)
    assert lora and all(torch.equal(lora[k], v) for k, v in get_peft_model_state_dict(rehomed).items())
    assert models.on_base(rehomed, a, "none", "cpu") is rehomed  # already there: kept as it is
    direct = AdapterDataset(filepath=str(tmp_path / "adapter"), load_args={"quantization": "none", "device": "cpu"})
    expected = nodes.predict(direct.load(), models.load_tokenizer(a), dict(zip(
        ("sentiment", "out_of_sample", "alpaca"), _frames(), strict=True)), forced, model_name="v", display_name="FT-V")
    assert list(moved["prediction"]) == list(expected["prediction"])


@pytest.mark.slow
def test_a_variant_on_another_base_is_refused_at_scoring(bases, tmp_path):
    a, b = bases
    elsewhere = _saved_adapter(b, "none", tmp_path / "adapter_b").load()
    variant = nodes.generate_predictions(a, _sets(), PARAMS, 0, variant=VARIANTS["v"], adapter=elsewhere, model_name="v")
    base = nodes.generate_predictions(a, _sets(), PARAMS, 0, display_name="Base",
                                      quantization=nodes.base_quantization(PARAMS, variant))
    assert set(variant["base_ref"]) == {b}
    with pytest.raises(ParameterError, match="point `base_model` at the base the adapters were trained on"):
        nodes.score_predictions({"max_new_tokens": PARAMS["max_new_tokens"]}, SOURCES, EVAL_SETS,
                                base, variant)
