"""The shared chat-template helper: same prompt for training and generation, any model."""

import pytest

from mift_kedro.chat import (
    assistant_message,
    render_example,
    render_prompt,
    tokenize_example,
    tokenize_prompt,
    user_message,
)

PROMPT = user_message("Classify the sentiment of the following tweet.", "what a lovely day")
COMPLETION = assistant_message("positive")


def test_user_message_joins_instruction_and_input():
    assert user_message("Do it.", "  the input ") == [{"role": "user", "content": "Do it.\n\nthe input"}]
    assert user_message("Do it.", "") == [{"role": "user", "content": "Do it."}]


def test_embedded_model_renders_chatml(embedded_tokenizer):
    prompt_text = render_prompt(embedded_tokenizer, PROMPT)
    assert prompt_text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nClassify the sentiment of the following tweet.\n\nwhat a lovely day<|im_end|>" in prompt_text
    prompt_part, completion_part = render_example(embedded_tokenizer, PROMPT, COMPLETION)
    assert prompt_part == prompt_text
    assert completion_part == "positive<|im_end|>\n"


def test_llama2_template_renders_inst_format(llama2_style_tokenizer):
    prompt_text, completion_text = render_example(llama2_style_tokenizer, PROMPT, COMPLETION)
    assert prompt_text == "<s>[INST] Classify the sentiment of the following tweet.\n\nwhat a lovely day [/INST]"
    assert completion_text == " positive </s>"
    assert render_prompt(llama2_style_tokenizer, PROMPT) == prompt_text


def test_tokenized_example_masks_the_prompt(embedded_tokenizer):
    encoded = tokenize_example(embedded_tokenizer, PROMPT, COMPLETION)
    prompt_ids = tokenize_prompt(embedded_tokenizer, render_prompt(embedded_tokenizer, PROMPT))
    n_prompt = len(prompt_ids)
    assert encoded["input_ids"][:n_prompt] == prompt_ids  # generation sees exactly this prefix
    assert encoded["completion_mask"] == [0] * n_prompt + [1] * (len(encoded["input_ids"]) - n_prompt)
    completion = embedded_tokenizer.decode([t for t, m in zip(encoded["input_ids"], encoded["completion_mask"]) if m])
    assert completion == "positive<|im_end|>\n"


def test_no_bos_added_twice(llama2_style_tokenizer):
    ids = tokenize_prompt(llama2_style_tokenizer, render_prompt(llama2_style_tokenizer, PROMPT))
    text = llama2_style_tokenizer.decode(ids)
    assert text.count("<s>") == 1


def test_missing_chat_template_is_a_clear_error(embedded_tokenizer):
    embedded_tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        render_prompt(embedded_tokenizer, PROMPT)


# --- whole-conversation tokenization (a SentencePiece Llama-2-style tokenizer) ---------------

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.mark.parametrize("template", ["llama2", "chatml"])
def test_training_ids_are_the_whole_conversation_tokenized_at_once(llama2_sp_tokenizer, shared_data, template):
    """With a dummy-prefix tokenizer, the answer tokenized on its own starts with a `▁` that the
    whole conversation does not have (ChatML: the answer follows a newline); the training ids
    must be the conversation's own, and the mask must start after the prompt's tokens."""
    import json

    from tests.conftest import LLAMA2_CHAT_TEMPLATE

    tokenizer = llama2_sp_tokenizer
    tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE if template == "llama2" else CHATML
    records = [json.loads(line) for line in (shared_data / "alpaca" / "train.jsonl").read_text().splitlines()[:20]]
    separate = 0
    for record in records:
        prompt, completion = user_message(record["instruction"], record["input"]), assistant_message(record["output"])
        encoded = tokenize_example(tokenizer, prompt, completion)
        prompt_text, completion_text = render_example(tokenizer, prompt, completion)
        whole = tokenizer(prompt_text + completion_text, add_special_tokens=False)["input_ids"]
        assert encoded["input_ids"] == whole
        n_prompt = len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
        assert encoded["completion_mask"] == [0] * n_prompt + [1] * (len(whole) - n_prompt)
        masked = [t for t, m in zip(encoded["input_ids"], encoded["completion_mask"], strict=True) if m]
        assert tokenizer.decode(masked).strip() == completion_text.strip()
        separate += whole != tokenize_prompt(tokenizer, prompt_text) + tokenize_prompt(tokenizer, completion_text)
    if template == "chatml":  # where tokenizing the parts apart goes wrong, for every record
        assert separate == len(records)
    assert "[INST]" in prompt_text if template == "llama2" else prompt_text.endswith("assistant\n")


def test_a_prompt_merging_into_the_answer_is_a_clear_error(embedded_tokenizer):
    """SmolLM2's byte-level BPE joins the prompt's closing newline with newlines that open
    the answer: no token boundary where the answer starts, so no exact loss mask."""
    with pytest.raises(ValueError, match="merges the end of the prompt"):
        tokenize_example(embedded_tokenizer, PROMPT, assistant_message("\n\n\n Positive"))


# --- Llama-2: the token ids of Meta's reference code ------------------------------------------

B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"


def meta_llama2_ids(sp, dialog: list[dict[str, str]]) -> list[int]:
    """Meta's ``Llama.chat_completion`` encoding (llama/generation.py): the system prompt merged
    into the first user turn, each [INST] pair encoded by SentencePiece on its own (dummy prefix
    included) between <s> and </s>, the last user turn open."""
    if dialog[0]["role"] == "system":
        dialog = [{"role": "user", "content": B_SYS + dialog[0]["content"] + E_SYS + dialog[1]["content"]}, *dialog[2:]]
    ids: list[int] = []
    for prompt, answer in zip(dialog[::2], dialog[1::2], strict=False):
        if answer["role"] == "assistant":
            ids += [sp.bos_id(), *sp.encode(f"[INST] {prompt['content'].strip()} [/INST] {answer['content'].strip()} "), sp.eos_id()]
    if dialog[-1]["role"] == "user":
        ids += [sp.bos_id(), *sp.encode(f"[INST] {dialog[-1]['content'].strip()} [/INST]")]
    return ids


def test_llama2_conversation_ids_equal_metas_sentencepiece_encoding(llama2_sp_tokenizer_dir, tmp_path, shared_data):
    """transformers 5 loads a LlamaTokenizer with legacy=False: without the fix `<s>[INST]`
    tokenizes as `<s>`, `[`, … where Meta's code has `<s>`, `▁[`, …"""
    import json

    import sentencepiece as spm
    from transformers import AutoTokenizer

    from mift_kedro import models
    from tests.conftest import LLAMA2_CHAT_TEMPLATE

    source = AutoTokenizer.from_pretrained(llama2_sp_tokenizer_dir)
    source.chat_template = LLAMA2_CHAT_TEMPLATE
    source.save_pretrained(tmp_path)
    tokenizer = models.load_tokenizer(str(tmp_path))
    sp = spm.SentencePieceProcessor(model_file=str(llama2_sp_tokenizer_dir / "tokenizer.model"))
    records = [json.loads(line) for line in (shared_data / "alpaca" / "train.jsonl").read_text().splitlines()[:10]]
    for k, record in enumerate(records):
        system = [{"role": "system", "content": "Answer with one word."}] if k % 2 else []
        prompt = system + user_message(record["instruction"], record["input"])
        completion = assistant_message(record["output"])
        encoded = tokenize_example(tokenizer, prompt, completion)
        assert encoded["input_ids"] == meta_llama2_ids(sp, prompt + completion)
        assert tokenize_prompt(tokenizer, render_prompt(tokenizer, prompt)) == meta_llama2_ids(sp, prompt)
    second_turn = prompt + completion + user_message("And now?")
    assert tokenize_prompt(tokenizer, render_prompt(tokenizer, second_turn)) == meta_llama2_ids(sp, second_turn)
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"][:2]) == ["<s>", "▁["]


# --- the system-prompt policy, decided by a test render ------------------------------------------

USER_ONLY = (  # drops a system turn silently, as some templates do
    "{% for m in messages %}{% if m['role'] != 'system' %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
NO_LONE_USER = "{% if messages|length < 3 %}{{ raise_exception('give the whole exchange') }}{% endif %}x"


@pytest.mark.parametrize(("template", "policy"), [(CHATML, "native"), (USER_ONLY, "merged"), (NO_LONE_USER, "refused")])
def test_system_prompt_policy_is_decided_by_a_test_render(embedded_tokenizer, template, policy):
    from mift_kedro.chat import conform, system_message, system_policy

    embedded_tokenizer.chat_template = template
    assert system_policy(embedded_tokenizer) == policy
    prompt = system_message("Be brief.") + PROMPT
    if policy == "refused":
        with pytest.raises(ValueError, match="takes no system turn.*remove the system prompt"):
            conform(embedded_tokenizer, prompt)
        return
    text = render_prompt(embedded_tokenizer, prompt)
    assert "Be brief." in text  # never silently dropped
    if policy == "merged":
        assert text == "<|user|>Be brief.\n\nClassify the sentiment of the following tweet.\n\nwhat a lovely day<|end|><|assistant|>"
