"""Shared fixtures: the real offline data, the embedded tokenizer, a throwaway Kedro project."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from tests import processes

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MIFT_DATA_DIR") or PROJECT_ROOT.parent / "shared" / "data").resolve()
CONVERTED = PROJECT_ROOT / "data" / "06_models" / "base_model"  # a run's embedded conversion

#: Llama-2-chat's chat template as published with meta-llama/Llama-2-7b-chat-hf, the file
#: `--env llama2` applies to a tokenizer without a template of its own.
LLAMA2_CHAT_TEMPLATE = (PROJECT_ROOT / "conf" / "llama2" / "chat_template_llama2.jinja").read_text()


def pytest_configure(config):
    """Ignore the library warnings the project ignores in runs; mark the session's processes
    (workers and everything they start inherit the mark); and make the processes the tests start
    (`kedro run`, servers) import this checkout's package, as the tests themselves do, whichever
    checkout the environment has installed."""
    from mift_kedro.library_warnings import pytest_filters

    source = str(PROJECT_ROOT / "src")
    if source not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)

    for line in pytest_filters():
        config.addinivalue_line("filterwarnings", line)
    if not hasattr(config, "workerinput"):  # the controller, or a run without workers
        os.environ[processes.SESSION_MARK] = uuid.uuid4().hex


@pytest.hookimpl(trylast=True)  # after pytest-xdist has stopped its workers
def pytest_sessionfinish(session):
    """Fail the session when a process started by a test is still running, and stop it."""
    if hasattr(session.config, "workerinput"):
        return
    mark = os.environ.get(processes.SESSION_MARK)
    left = processes.survivors(mark) if mark else []
    if left:
        lines = "\n".join(f"  {processes.describe(p)}" for p in left)
        processes.kill(left)
        session.config.get_terminal_writer().line(
            f"FAILED: {len(left)} process(es) started by the tests were still running (now killed):\n"
            f"{lines}", red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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


def save_model_dir(out: Path, tokenizer, hidden_size: int | None = 32, **config) -> Path:
    """``tokenizer`` and, unless ``hidden_size`` is None, a tiny random Llama sized for it
    (:func:`tiny_llama`), saved in ``out``: usable as ``base_model: {source: local, name: out}``."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    if hidden_size is not None:
        tiny_llama(tokenizer, hidden_size, **config).save_pretrained(out)
    return out


def _corpus(shared_data: Path) -> list[str]:
    """Real tweets and Alpaca records (instruction, input, output) of the offline data."""
    import json

    lines = (shared_data / "twitter_sentiment" / "train.jsonl").read_text().splitlines()
    texts = [json.loads(line)["text"] for line in lines]
    for line in (shared_data / "alpaca" / "train.jsonl").read_text().splitlines():
        record = json.loads(line)
        texts += [record["instruction"], record["input"], record["output"]]
    return [text for text in texts if text.strip()]


@pytest.fixture(scope="session")
def llama2_sp_tokenizer_dir(tmp_path_factory, shared_data) -> Path:
    """A Llama-2-style tokenizer with NO chat template, like NousResearch/Llama-2-7b-chat-hf's.

    A SentencePiece BPE model trained here (well under a second) with Llama-2's settings
    (byte fallback, dummy prefix, digits split, whitespace and text kept as they are,
    <unk>/<s>/</s> = 0/1/2) on the offline tweets and Alpaca text, saved as Llama-2's repo
    ships it (``tokenizer.model`` and a LlamaTokenizer config), then loaded and saved again
    the way transformers converts it (``tokenizer.json``).
    """
    import io
    import json

    import sentencepiece as spm
    from transformers import AutoTokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus(shared_data)), model_writer=model, vocab_size=3000,
        model_type="bpe", byte_fallback=True, add_dummy_prefix=True, split_digits=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity",
        allow_whitespace_only_pieces=True, character_coverage=0.99995,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
        num_threads=1, minloglevel=2,
    )
    source = tmp_path_factory.mktemp("llama2_sp_source")
    (source / "tokenizer.model").write_bytes(model.getvalue())
    (source / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "legacy": False, "clean_up_tokenization_spaces": False, "bos_token": "<s>",
        "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
    }))
    tokenizer = AutoTokenizer.from_pretrained(source)
    assert not tokenizer.chat_template
    out = save_model_dir(tmp_path_factory.mktemp("llama2_sp_tokenizer"), tokenizer, hidden_size=None)
    (out / "tokenizer.model").write_bytes(model.getvalue())
    return out


@pytest.fixture
def llama2_sp_tokenizer(llama2_sp_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(llama2_sp_tokenizer_dir)


def hub_cache_repo(
    cache: Path, repo_id: str, files: dict[str, bytes], *, sha: str,
    repo_type: str = "model", ref: str | None = "main",
) -> Path:
    """Lay ``files`` out as huggingface_hub stores a download in ``cache``: blobs named by
    their hash, ``snapshots/<sha>/<file>`` links to them, ``refs/<ref>`` naming the commit."""
    import hashlib

    from huggingface_hub.file_download import repo_folder_name

    folder = cache / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    for name, content in files.items():
        blob = folder / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = folder / "snapshots" / sha / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / ref).write_text(sha)
    return folder / "snapshots" / sha


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE, with empty temporary Hub and ``datasets`` caches (not the machine's)."""
    from types import SimpleNamespace

    import datasets.config
    from huggingface_hub import constants

    caches = SimpleNamespace(hub=tmp_path / "hf_hub", datasets=tmp_path / "hf_datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(caches.hub))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", caches.datasets)
    return caches


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
    already made one, else the prepare_base_model node's conversion (made once per machine,
    ~40 s, in ~/.cache/mift_kedro/converted) written by the dataset."""
    from mift_kedro import models
    from mift_kedro.datasets import BaseModelDataset
    from mift_kedro.pipelines.training.nodes import prepare_base_model

    source = models.ModelSource(source="embedded", name=models.EMBEDDED_GGUF)
    recorded = models.read_source(CONVERTED)
    if recorded and models.ModelSource.from_dict(recorded) == source and (CONVERTED / "config.json").is_file():
        return CONVERTED
    out = tmp_path_factory.mktemp("embedded") / "base_model"
    BaseModelDataset(filepath=str(out)).save(prepare_base_model({"source": "embedded", "name": models.EMBEDDED_GGUF}))
    return out


#: Text for the tiny RoBERTa-type tokenizer: words at sentence starts and inside sentences,
#: so byte-level BPE learns both "The" and "ĠThe".
ROBERTA_CORPUS = [
    "The cat sat on the mat.", "The dog ran to the park and the cat sat.", "Hello world, the tweet is positive.",
    "This tweet is negative. The sentiment is positive or negative.", "Sure! Based on the tweet, the sentiment is: Negative",
] * 20


def tiny_roberta_bertscore_model(out: Path, hidden_size: int = 32, layers: int = 2) -> Path:
    """A local RoBERTa-type BERTScore model directory: a byte-level BPE tokenizer trained here
    (the `tokenizers` library, roberta-large's settings: no prefix space, 512 tokens) and a
    random-initialised ``RobertaModel`` (seed 0). Use as ``reporting.bertscore.model_type: <out>``
    with ``num_layers`` at most ``layers``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(ROBERTA_CORPUS, trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    tokenizer = RobertaTokenizer(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=512,
    )
    torch.manual_seed(0)
    model = RobertaModel(RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden_size, max_position_embeddings=514, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, type_vocab_size=1,
    ))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory) -> Path:
    return tiny_roberta_bertscore_model(tmp_path_factory.mktemp("tiny_roberta"))
