"""The base model's record: its revision and chat template reach every load of the model and
tokenizer (training, adapters, reporting); raw datasets load at their revision."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from mift_kedro import chat, config, models
from mift_kedro.datasets import AdapterDataset, BaseModelDataset, HubOrLocalDataset
from mift_kedro.pipelines.training import nodes
from tests.conftest import LLAMA2_CHAT_TEMPLATE, PROJECT_ROOT, hub_cache_repo, save_model_dir

LLAMA2 = "NousResearch/Llama-2-7b-chat-hf"
TEMPLATE_FILE = PROJECT_ROOT / "conf" / "llama2" / "chat_template_llama2.jinja"
PINNED, NEWER = "1" * 40, "2" * 40


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_template_is_applied_only_to_a_tokenizer_without_one(
    tmp_path, llama2_sp_tokenizer_dir, embedded_tokenizer_dir, caplog
):
    base = BaseModelDataset(filepath=str(tmp_path / "base"))
    base.save(models.ModelSource("local", str(llama2_sp_tokenizer_dir), chat_template=LLAMA2_CHAT_TEMPLATE))
    with caplog.at_level(logging.INFO, logger="mift_kedro.models"):
        tokenizer = models.load_tokenizer(base.load())
    assert chat.render_prompt(tokenizer, chat.user_message("hi")) == "<s>[INST] hi [/INST]"
    assert "has no chat template: applying base_model.chat_template" in caplog.text

    caplog.clear()
    base.save(models.ModelSource("local", str(embedded_tokenizer_dir), chat_template=LLAMA2_CHAT_TEMPLATE))
    with caplog.at_level(logging.INFO, logger="mift_kedro.models"):
        tokenizer = models.load_tokenizer(base.load())
    prompt = chat.render_prompt(tokenizer, chat.user_message("hi"))
    assert prompt.endswith("<|im_start|>assistant\n") and "[INST]" not in prompt  # its own ChatML
    assert "has its own chat template: base_model.chat_template is not used" in caplog.text

    base.save(models.ModelSource("local", str(llama2_sp_tokenizer_dir)))
    with pytest.raises(ValueError, match="base_model.chat_template"):
        models.load_tokenizer(base.load())


def test_the_published_llama2_format_is_the_configured_template(llama2_sp_tokenizer):
    llama2_sp_tokenizer.chat_template = TEMPLATE_FILE.read_text()
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]
    assert llama2_sp_tokenizer.apply_chat_template(conversation, tokenize=False) == (
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello. </s><s>[INST] Bye [/INST]"
    )


def test_prepare_base_model_records_the_template_text(monkeypatch, llama2_sp_tokenizer_dir):
    monkeypatch.chdir(PROJECT_ROOT)  # paths in parameters are relative to the project root
    params = {"source": "local", "name": str(llama2_sp_tokenizer_dir),
              "chat_template": "conf/llama2/chat_template_llama2.jinja"}
    source = nodes.prepare_base_model(params)
    assert source.chat_template == TEMPLATE_FILE.read_text()
    with pytest.raises(config.ParameterError, match="chat_template: no file 'conf/llama2/none.jinja'"):
        nodes.prepare_base_model({**params, "chat_template": "conf/llama2/none.jinja"})


def test_a_hub_model_loads_at_its_pinned_revision_everywhere(tmp_path, offline_hub, llama2_sp_tokenizer):
    """Two commits of the repository in the Hub cache: the pinned one (hidden size 32) and a
    newer default branch (48). The model, the tokenizer (with the template), the adapter
    trained on it and the adapter reloaded all come from the pinned commit."""
    from peft import LoraConfig, get_peft_model

    pinned = save_model_dir(tmp_path / "pinned", llama2_sp_tokenizer, hidden_size=32)
    newer = save_model_dir(tmp_path / "newer", llama2_sp_tokenizer, hidden_size=48)
    hub_cache_repo(offline_hub.hub, LLAMA2, _files(pinned), sha=PINNED, ref=None)
    hub_cache_repo(offline_hub.hub, LLAMA2, _files(newer), sha=NEWER, ref="main")

    base = BaseModelDataset(filepath=str(tmp_path / "base"))
    base.save(nodes.prepare_base_model(
        {"source": "hub", "name": LLAMA2, "revision": PINNED, "chat_template": str(TEMPLATE_FILE)}
    ))
    ref = base.load()
    model = models.load_causal_lm(ref, device="cpu")
    assert model.config.hidden_size == 32
    assert "[INST]" in chat.render_prompt(models.load_tokenizer(ref), chat.user_message("hi"))

    adapter = AdapterDataset(filepath=str(tmp_path / "adapter"))
    adapter.save(get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])))
    saved = Path(adapter._get_load_path())
    assert json.loads((saved / "mift_adapter.json").read_text())["base_model"] == ref
    reloaded = adapter.load()
    assert reloaded.peft_config["default"].base_model_name_or_path == ref
    assert reloaded.get_base_model().config.hidden_size == 32
    assert "[INST]" in chat.render_prompt(models.load_tokenizer(str(saved)), chat.user_message("hi"))

    base.save(models.ModelSource("hub", LLAMA2, chat_template=LLAMA2_CHAT_TEMPLATE))  # unpinned
    assert models.load_causal_lm(base.load(), device="cpu").config.hidden_size == 48


def test_a_missing_revision_fails_fast_naming_the_download(offline_hub):
    with pytest.raises(models.ModelNotFoundError, match=f"hf download {LLAMA2} --revision {PINNED}"):
        nodes.prepare_base_model({"source": "hub", "name": LLAMA2, "revision": PINNED})


def test_raw_dataset_loads_the_hub_at_its_revision(offline_hub, monkeypatch):
    """datasets has prepared the dataset before (its offline cache), so the Hub need not
    answer; ``load_dataset`` receives the pinned revision."""
    import datasets

    monkeypatch.delenv("MIFT_DATA_DIR", raising=False)
    (offline_hub.datasets / "tatsu-lab___alpaca" / "default" / "0.0.0" / "abc").mkdir(parents=True)
    calls = []

    def load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return datasets.Dataset.from_dict({"instruction": ["a", "b"], "input": ["", ""], "output": ["x", "y"]})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    dataset = HubOrLocalDataset(
        hub_id="tatsu-lab/alpaca", hub_split="train", local_path="alpaca/train.jsonl",
        columns=["instruction", "input", "output"], revision=PINNED,
    )
    assert isinstance(dataset.load(), pd.DataFrame)
    assert calls == [("tatsu-lab/alpaca", {"split": "train", "revision": PINNED})]
