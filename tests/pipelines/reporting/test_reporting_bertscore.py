"""BERTScore with a RoBERTa-type model under transformers 5 (a tiny local one, built here)."""

from __future__ import annotations

import pytest
import torch

from mift_kedro.config import ParameterError
from mift_kedro.pipelines.reporting import metrics as M

SENTENCES = ["The cat sat on the mat.", "Sure! Based on the tweet, the sentiment is: Negative"]


def _tokens(tokenizer, ids):
    return tokenizer.convert_ids_to_tokens(ids)


def test_bert_score_loses_the_first_words_space_under_transformers_5(tiny_roberta_dir):
    """Confirms the issue: bert-score 0.3.13 asks ``encode`` for ``add_prefix_space=True``,
    transformers 5's RoBERTa tokenizer ignores it, so the first word is encoded without its
    space token, unlike the standard encoding of ``" " + sentence``."""
    from bert_score.utils import get_tokenizer, sent_encode

    tokenizer = get_tokenizer(str(tiny_roberta_dir))  # exactly as BERTScorer loads it
    standard = tokenizer.encode(" " + SENTENCES[0])
    assert _tokens(tokenizer, standard)[:3] == ["<s>", "ĠThe", "Ġcat"]
    assert _tokens(tokenizer, sent_encode(tokenizer, SENTENCES[0]))[:3] == ["<s>", "The", "Ġcat"], (
        "bert-score/transformers honour add_prefix_space again: the tokenizer reload in "
        "metrics.bertscore_scorer is no longer needed"
    )
    for sentence in SENTENCES:
        assert sent_encode(tokenizer, sentence) != tokenizer.encode(" " + sentence)


def test_scorer_encodes_with_the_prefix_space_and_scores_with_it(tiny_roberta_dir):
    from bert_score import BERTScorer
    from bert_score.utils import get_tokenizer, sent_encode

    plain = get_tokenizer(str(tiny_roberta_dir))
    scorer = M.bertscore_scorer(str(tiny_roberta_dir), num_layers=2, device="cpu")
    for sentence in SENTENCES:
        assert sent_encode(scorer._tokenizer, sentence) == plain.encode(" " + sentence)

    preds, refs = ["The cat sat on a mat.", "The dog ran."], ["The cat sat on the mat.", "A dog ran to the park."]
    fixed = M.bertscore_f1(preds, refs, model_type=str(tiny_roberta_dir), num_layers=2, device="cpu")
    _, _, expected = scorer.score(preds, refs)
    torch.testing.assert_close(torch.tensor(fixed, dtype=expected.dtype), expected)
    _, _, unfixed = BERTScorer(model_type=str(tiny_roberta_dir), num_layers=2, device="cpu").score(preds, refs)
    assert not torch.allclose(expected, unfixed)  # the first-word tokens reach the score
    same = M.bertscore_f1(["The cat sat."], ["The cat sat."], model_type=str(tiny_roberta_dir), num_layers=1)
    assert same[0] == pytest.approx(1.0, abs=1e-5)


def test_a_local_model_directory_needs_its_layer(tiny_roberta_dir):
    with pytest.raises(ParameterError, match=r"reporting\.bertscore\.num_layers"):
        M.bertscore_f1(["a cat"], ["the cat"], model_type=str(tiny_roberta_dir), num_layers=None)
