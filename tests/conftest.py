"""Shared fixtures: the real offline data, the embedded tokenizer, a throwaway Kedro project."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MIFT_DATA_DIR") or PROJECT_ROOT.parent / "shared" / "data").resolve()
CONVERTED = PROJECT_ROOT / "data" / "06_models" / "base_model"  # a run's embedded conversion

#: Llama-2-chat's chat template as published with meta-llama/Llama-2-7b-chat-hf; the
#: tokenizer itself cannot be downloaded here, so tests set this template on another one.
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "twitter_sentiment" / "train.jsonl").is_file():
        pytest.fail(f"offline data not found at {SHARED_DATA}: set MIFT_DATA_DIR to shared/data")
    return SHARED_DATA


@pytest.fixture(scope="session")
def embedded_tokenizer_dir(tmp_path_factory) -> Path:
    """The embedded SmolLM2 tokenizer (with its ChatML template): the checkout's conversion
    when a run already made one, else read from the GGUF file once per session (~10 s)."""
    from transformers import AutoTokenizer

    from mift_kedro import models

    if (CONVERTED / "tokenizer.json").is_file():
        return CONVERTED
    out = tmp_path_factory.mktemp("embedded_tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(models.embedded_model_folder(), gguf_file=models.EMBEDDED_GGUF)
    tokenizer.save_pretrained(out)
    return out


def tiny_llama(tokenizer, hidden_size: int, **config):
    """A 2-layer random-initialised Llama (seed 0) sized for ``tokenizer``, for fast tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **config,
        )
    )


@pytest.fixture
def embedded_tokenizer(embedded_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_tokenizer_dir)


@pytest.fixture
def llama2_style_tokenizer(embedded_tokenizer):
    """A tokenizer carrying Llama-2-chat's [INST] template and <s>/</s> markers."""
    embedded_tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE
    embedded_tokenizer.bos_token = "<s>"
    embedded_tokenizer.eos_token = "</s>"
    return embedded_tokenizer


def copy_project(project: Path) -> Path:
    """Copy the project's configuration and committed raw data to ``project``, so that
    pipeline runs write their versioned outputs there and not into the checkout."""
    project.mkdir(parents=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT_ROOT / name, project / name)
    shutil.copytree(PROJECT_ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    (project / "src").mkdir()  # the package itself is installed; Kedro wants the folder
    shutil.copytree(PROJECT_ROOT / "data" / "01_raw", project / "data" / "01_raw")
    return project


@pytest.fixture
def kedro_project(tmp_path, monkeypatch, shared_data) -> Path:
    """A throwaway copy of the project, the working directory for the test."""
    project = copy_project(tmp_path / "project")
    monkeypatch.setenv("MIFT_DATA_DIR", str(shared_data))
    monkeypatch.chdir(project)
    return project


@pytest.fixture(scope="session")
def embedded_base_model(tmp_path_factory) -> Path:
    """The embedded SmolLM2 converted to safetensors: the checkout's own conversion when a run
    already made one, else converted once per test session (~40 s)."""
    from mift_kedro import models
    from mift_kedro.datasets import BaseModelDataset

    source = models.ModelSource(source="embedded", name=models.EMBEDDED_GGUF)
    if models.read_source(CONVERTED) == source.to_dict() and (CONVERTED / "config.json").is_file():
        return CONVERTED
    out = tmp_path_factory.mktemp("embedded") / "base_model"
    BaseModelDataset(filepath=str(out)).save(source)
    return out
