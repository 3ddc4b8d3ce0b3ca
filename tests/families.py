"""Tiny offline stand-ins of the chat-model families the pipeline fine-tunes.

Each family: a random model from its own transformers config class (2 layers, hidden 64: bitsandbytes' 4-bit blocks), a
tokenizer trained here on the offline tweets and Alpaca text with the family's kind of
tokenizer and special tokens (SentencePiece for Mistral, Gemma and Phi-3; byte-level BPE for
Llama-3 and Qwen), and the family's published chat template as text: from the TRL wheel's
``trl/chat_templates`` where it ships one, else from ``tests/fixtures/chat_templates`` (which
names its source). Saved as a model directory, usable as ``base_model: {source: local}``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "chat_templates"


def trl_template(name: str) -> str:
    return (resources.files("trl") / "chat_templates" / f"{name}.jinja").read_text()


@dataclass(frozen=True)
class Family:
    name: str
    config_class: str
    template: str  # "trl:<name>" or a fixture file name
    tokenizer: str  # "sentencepiece" (class, dummy prefix) or "bytelevel"
    bos: str | None
    eos: str
    pad: str | None
    specials: tuple[str, ...]
    end_of_turn: str  # what closes an assistant turn
    system: str  # the template's system-prompt policy
    prompt_end: str  # how a rendered prompt ends (the generation prompt)
    config: dict[str, Any] = field(default_factory=dict)
    tokenizer_class: str = "LlamaTokenizer"
    dummy_prefix: bool = True

    def template_text(self) -> str:
        if self.template.startswith("trl:"):
            return trl_template(self.template[4:])
        return (FIXTURES / self.template).read_text().rstrip("\n")


FAMILIES = {
    "llama3": Family(
        "llama3", "LlamaConfig", "trl:llama3", "bytelevel", "<|begin_of_text|>", "<|eot_id|>", None,
        ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        "<|eot_id|>", "native", "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "qwen2_5": Family(
        "qwen2_5", "Qwen2Config", "trl:qwen2_5", "bytelevel", None, "<|im_end|>", "<|endoftext|>",
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"), "<|im_end|>", "native", "<|im_start|>assistant\n",
    ),
    "mistral": Family(
        "mistral", "MistralConfig", "mistral_instruct_v0.2.jinja", "sentencepiece", "<s>", "</s>", None,
        ("<unk>", "<s>", "</s>"), "</s>", "merged", " [/INST]", config={"sliding_window": 16},
    ),
    "gemma2": Family(
        "gemma2", "Gemma2Config", "trl:gemma", "sentencepiece", "<bos>", "<eos>", "<pad>",
        ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"), "<end_of_turn>", "merged",
        "<start_of_turn>model\n",
        config={"sliding_window": 16, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
                "query_pre_attn_scalar": 16, "head_dim": 16},
        tokenizer_class="GemmaTokenizer", dummy_prefix=False,
    ),
    "gemma3": Family(
        "gemma3", "Gemma3TextConfig", "trl:gemma3", "sentencepiece", "<bos>", "<eos>", "<pad>",
        ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"), "<end_of_turn>",
        "native",  # its own template writes the system text into the first user turn
        "<start_of_turn>model\n",
        config={"sliding_window": 16, "query_pre_attn_scalar": 16, "head_dim": 16},
        tokenizer_class="GemmaTokenizer", dummy_prefix=False,
    ),
    "qwen3": Family(
        "qwen3", "Qwen3Config", "trl:qwen3", "bytelevel", None, "<|im_end|>", "<|endoftext|>",
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"), "<|im_end|>", "native",
        "<|im_start|>assistant\n<think>\n\n</think>\n\n", config={"head_dim": 16},
    ),
    "phi3": Family(
        "phi3", "Phi3Config", "trl:phi3", "sentencepiece", "<s>", "<|endoftext|>", "<|endoftext|>",
        ("<unk>", "<s>", "</s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
        "<|end|>", "native", "<|assistant|>\n",
    ),
}


def corpus(shared_data: Path, limit: int = 3000) -> list[str]:
    lines = (shared_data / "twitter_sentiment" / "train.jsonl").read_text().splitlines()[:limit]
    texts = [json.loads(line)["text"] for line in lines]
    for line in (shared_data / "alpaca" / "train.jsonl").read_text().splitlines()[:limit]:
        record = json.loads(line)
        texts += [record["instruction"], record["input"], record["output"]]
    return [t for t in texts if t.strip()]


def _sentencepiece(family: Family, texts: list[str], out: Path) -> Any:
    """A SentencePiece BPE model with the family's settings, loaded by its transformers class."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    fixed = [family.bos, family.eos, "<unk>"]
    extra = [t for t in family.specials if t not in fixed]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=1200, model_type="bpe",
        byte_fallback=True, add_dummy_prefix=family.dummy_prefix, split_digits=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", allow_whitespace_only_pieces=True,
        character_coverage=0.9995, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, unk_piece="<unk>",
        bos_piece=family.bos, eos_piece=family.eos, user_defined_symbols=extra, num_threads=1, minloglevel=2,
    )
    source = out.parent / f"{out.name}_source"
    source.mkdir(parents=True, exist_ok=True)
    (source / "tokenizer.model").write_bytes(model.getvalue())
    (source / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": family.tokenizer_class, "add_bos_token": False, "add_eos_token": False,
        "legacy": False, "bos_token": family.bos, "eos_token": family.eos, "unk_token": "<unk>",
        "pad_token": family.pad,
    }))
    return AutoTokenizer.from_pretrained(source)


def _bytelevel(family: Family, texts: list[str]) -> Any:
    """A byte-level BPE (Llama-3's and Qwen's kind) with the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=1200, special_tokens=list(family.specials), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=family.bos, eos_token=family.eos,
                                   pad_token=family.pad, clean_up_tokenization_spaces=False)


def build(family: Family, shared_data: Path, out: Path, hidden_size: int = 64) -> Path:
    """Tokenizer (with the template) and a tiny random model of ``family``, saved in ``out``."""
    import torch
    import transformers
    from tokenizers import AddedToken

    texts = corpus(shared_data)
    tokenizer = _sentencepiece(family, texts, out) if family.tokenizer == "sentencepiece" else _bytelevel(family, texts)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in family.specials], special_tokens=True)
    tokenizer.chat_template = family.template_text()
    config_class = getattr(transformers, family.config_class)
    config = config_class(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        tie_word_embeddings=False, **family.config,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
