"""The one place where a model's chat template turns conversations into text and tokens.

Generation renders prompts with :func:`render_prompt`; training lets TRL apply the same
tokenizer template to the whole conversation, which :func:`tokenize_example` states in full
(the tests check that TRL's token ids equal it), so a model sees exactly the same prompt in both. The format comes from the tokenizer's own
chat template (ChatML for SmolLM2, ``[INST]`` for Llama-2-chat): nothing here knows a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Message = dict[str, str]


def user_message(instruction: str, input_text: str = "") -> list[Message]:
    """The user turn of an instruction record (Alpaca's fields, or a templated tweet)."""
    content = instruction.strip()
    if input_text and input_text.strip():
        content = f"{content}\n\n{input_text.strip()}"
    return [{"role": "user", "content": content}]


def system_message(content: str | None) -> list[Message]:
    """A system turn; none for None or blank (how a chat template receives one depends on the
    model: :func:`system_policy`)."""
    return [{"role": "system", "content": content.strip()}] if content and content.strip() else []


def assistant_message(output: str) -> list[Message]:
    return [{"role": "assistant", "content": output}]


def _require_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"Tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no chat template: "
            "use a chat (instruct) model, or set `tokenizer.chat_template` to a Jinja template."
        )


# --- the system turn: native, merged into the first user turn, or refused ----------------------

#: How a chat template takes a system prompt, decided by rendering one (:func:`system_policy`).
SYSTEM_POLICIES = ("native", "merged", "refused")
_PROBE_SYSTEM, _PROBE_USER = "mift-probe-system", "mift-probe-user"
_policies: dict[str, str] = {}


def _renders(tokenizer: Any, messages: list[Message]) -> str | None:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # jinja's raise_exception: "System role not supported", "roles must alternate"
        return None


def system_policy(tokenizer: Any) -> str:
    """``native`` when the template renders a system turn with its text; ``merged`` when it
    rejects or drops one (Gemma, Mistral up to v0.2: the system text then opens the first
    user turn, as Gemma-3's own template does); ``refused`` when it renders no user turn either."""
    _require_template(tokenizer)
    template = tokenizer.chat_template
    if template not in _policies:
        user = {"role": "user", "content": _PROBE_USER}
        native = _renders(tokenizer, [{"role": "system", "content": _PROBE_SYSTEM}, user])
        if native is not None and _PROBE_SYSTEM in native:
            _policies[template] = "native"
        elif _renders(tokenizer, [user]) is not None:
            _policies[template] = "merged"
        else:
            _policies[template] = "refused"
    return _policies[template]


def conform(tokenizer: Any, messages: Sequence[Message]) -> list[Message]:
    """``messages`` as the template takes them: a leading system turn kept (``native``) or
    merged into the first user turn (``merged``: "<system>\n\n<user>"); a clear error when
    the template takes none (``refused``)."""
    messages = list(messages)
    if not messages or messages[0].get("role") != "system":
        return messages
    policy = system_policy(tokenizer)
    if policy == "native":
        return messages
    if policy == "refused" or len(messages) < 2 or messages[1].get("role") != "user":
        raise ValueError(
            f"The chat template of {getattr(tokenizer, 'name_or_path', tokenizer)!r} takes no system "
            "turn and cannot merge it into a user turn: remove the system prompt (e.g. "
            "templates.sentiment.system), or set base_model.chat_template to a template that takes one."
        )
    first = {**messages[1], "content": f"{messages[0]['content'].strip()}\n\n{messages[1]['content']}"}
    return [first, *messages[2:]]


def render_prompt(tokenizer: Any, prompt: Sequence[Message]) -> str:
    """Prompt text up to and including the assistant header, ready for generation."""
    _require_template(tokenizer)
    return tokenizer.apply_chat_template(
        conform(tokenizer, prompt), tokenize=False, add_generation_prompt=True
    )


def render_example(
    tokenizer: Any, prompt: Sequence[Message], completion: Sequence[Message]
) -> tuple[str, str]:
    """Split a rendered conversation into (prompt text, completion text).

    The prompt text is exactly :func:`render_prompt`'s, and the completion text is what the
    template appends for the assistant turn (answer plus end-of-turn marker), so the loss
    can be put on the completion alone.
    """
    prompt_text = render_prompt(tokenizer, prompt)
    full_text = tokenizer.apply_chat_template(conform(tokenizer, list(prompt) + list(completion)), tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError(
            "The chat template renders the prompt differently with and without the answer, "
            "so the completion cannot be isolated; use a template whose generation prompt "
            "is a prefix of the full conversation."
        )
    return prompt_text, full_text[len(prompt_text) :]


def tokenize_prompt(tokenizer: Any, prompt_text: str) -> list[int]:
    """Token ids of rendered text; the template already holds any BOS, so add none."""
    return tokenizer(prompt_text, add_special_tokens=False)["input_ids"]


def tokenize_example(
    tokenizer: Any, prompt: Sequence[Message], completion: Sequence[Message]
) -> dict[str, list[int]]:
    """``input_ids`` of the whole conversation and a ``completion_mask`` (1 where loss applies).

    The conversation is tokenized at once, as a model sees it at inference: tokenizing the
    completion on its own would give a SentencePiece tokenizer's dummy-prefix ``▁`` (or
    another piece) that never occurs after the prompt. The mask starts after the prompt's
    own token count, which requires the prompt's tokens to be a prefix of the whole's.
    """
    prompt_text, completion_text = render_example(tokenizer, prompt, completion)
    prompt_ids = tokenize_prompt(tokenizer, prompt_text)
    input_ids = tokenize_prompt(tokenizer, prompt_text + completion_text)
    if input_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError(
            f"Tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} merges the end of the "
            f"prompt with the start of the answer (prompt ends {prompt_text[-20:]!r}, answer "
            f"starts {completion_text[:20]!r}), so the loss mask cannot start at a token "
            "boundary: use a chat template whose generation prompt ends where a token ends "
            "(e.g. with a newline, a space or a special token)."
        )
    return {
        "input_ids": input_ids,
        "completion_mask": [0] * len(prompt_ids) + [1] * (len(input_ids) - len(prompt_ids)),
    }


def match_meta_inst_tokenization(tokenizer: Any) -> bool:
    """Give an ``[INST]`` template's turns SentencePiece's dummy prefix, as Meta's reference code
    does; True when the tokenizer needed it.

    Meta's Llama-2 code (and Mistral's v1 tokenizer) encodes each ``[INST] … [/INST] …`` turn
    with SentencePiece on its own, dummy prefix included: ``<s>``, ``▁[``, ``INST``… A
    ``LlamaTokenizer`` loaded by transformers 5 (``legacy=False``) prepends ``▁`` only at the
    very start of the text (Metaspace ``prepend_scheme="first"``), so ``<s>[INST]`` became
    ``<s>``, ``[``, ``INST``: every prompt off the chat model's own distribution. Prepending
    to every text segment between special tokens (``"always"``) restores Meta's ids.
    """
    from tokenizers import pre_tokenizers

    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    if not isinstance(pre, pre_tokenizers.Metaspace) or pre.prepend_scheme != "first":
        return False
    if "[INST]" in tokenizer.get_added_vocab() or not getattr(tokenizer, "chat_template", None):
        return False  # [INST] as a control token (Mistral v3): no SentencePiece text to prefix
    if "[INST]" not in render_prompt(tokenizer, user_message("x")):
        return False
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=pre.replacement, prepend_scheme="always", split=pre.split)
    return True


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """The special token that closes an assistant turn in this template (``<|eot_id|>``,
    ``<end_of_turn>``, ``<|im_end|>``, ``<|end|>``, ``</s>``…): rendered after a probe answer,
    the first special token that follows it. Generation stops at it; training puts it in the
    labels (it is part of the completion text). Empty when the template closes with none."""
    probe = "mift-probe-answer"
    _, completion = render_example(tokenizer, user_message("x"), assistant_message(probe))
    tail = completion[completion.index(probe) + len(probe):]
    special = set(tokenizer.all_special_ids) | {
        token.content and tokenizer.convert_tokens_to_ids(token.content)
        for token in getattr(tokenizer, "added_tokens_decoder", {}).values() if token.special
    }
    ids = tokenize_prompt(tokenizer, tail)
    return [next(i for i in ids if i in special)] if any(i in special for i in ids) else []


def with_template_kwargs(template: str, kwargs: dict[str, Any]) -> str:
    """``template`` with ``kwargs`` set at its top (``{%- set enable_thinking = false %}``), so
    every renderer (TRL's tokenization, generation, these helpers) renders alike without
    passing them on each call."""
    import json

    def literal(value: Any) -> str:
        return "none" if value is None else json.dumps(value)

    head = "".join(f"{{%- set {key} = {literal(value)} %}}" for key, value in kwargs.items())
    return head + template
