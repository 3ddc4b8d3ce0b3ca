"""reporting: metrics on hand-computed cases, label mapping, bootstrap, tables and the report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import sacrebleu

from mift_kedro.config import ParameterError
from mift_kedro.parameters import validate_parameters
from mift_kedro.pipelines.reporting import create_pipeline, nodes, stats
from mift_kedro.pipelines.reporting import metrics as M
from mift_kedro.pipelines.reporting.params import (
    check_eval_sets,
    generation_settings,
    reporting_params,
)

LABELS = {0: "negative", 1: "positive"}
#: The default configuration's sources and evaluation sets, as scoring reads them.
SOURCES = {
    "sentiment": {"kind": "classification", "files": {"test": "t.jsonl"}, "fields": {"text": "text"}, "labels": LABELS},
    "out_of_sample": {"kind": "instruction", "files": {"test": "o.jsonl"}},
    "alpaca": {"kind": "instruction", "files": {"test": "a.jsonl"}},
}
EVAL_SETS = {"sentiment": {"table": "A"}, "out_of_sample": {"table": "B"}, "alpaca": {"table": "C"}}
NO_BENCHMARKS = pd.DataFrame(columns=nodes.METRIC_COLUMNS)  # a run without reporting.benchmarks

PARAMS = {
    "max_new_tokens": {"sentiment": 4, "out_of_sample": 16, "alpaca": 16},
    "bootstrap": {"resamples": 200, "confidence": 0.95},
}


# --- label mapping -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("positive", 1),
        ("Negative", 0),
        ("Positive.", 1),
        ("  **negative**!  ", 0),
        ("negative sentiment", 0),
        ("The tweet is positive", 1),
        ("Sentiment: POSITIVE", 1),
        ("positive or negative", 1),  # the first word decides
        ("it is not positive, rather negative", M.INVALID),  # both, and no first-word decision
        ("neutral", M.INVALID),
        ("", M.INVALID),
        (None, M.INVALID),
        ("positively", M.INVALID),  # whole words only
        ("negative-ish", 0),  # punctuation splits words
    ],
)
def test_label_mapping(answer, expected):
    assert M.map_label(answer, LABELS) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Sure! Based on the tweet, the sentiment is: Negative", 0),
        ("  Sure, I'd be happy to help! Based on the tweet you provided, I would classify the "
         "sentiment as: Positive", 1),
        ("Sure! Here is the sentiment classification of the tweet: Positive 😊", 1),
        ("Negative\n\nThe tweet expresses frustration about the commute.", 0),
        ("Negative. The tweet is not positive at all.", 0),  # the first word decides
        ("I apologize, but I cannot classify this tweet as it contains offensive language.", M.INVALID),
        ("Sure! The sentiment is negative, not positive.", M.INVALID),  # both, no first-word label
    ],
)
def test_label_mapping_of_verbose_llama2_chat_answers(answer, expected):
    assert M.map_label(answer, LABELS) == expected


# --- metrics on hand-computed cases ---------------------------------------------------------


def test_perfect_prediction_scores_maximal():
    text = "The cat sat on the mat near the door."
    assert M.corpus_bleu([text], [text]) == pytest.approx(100.0)
    rouge = M.rouge_scores([text], [text])
    assert all(rouge[k][0] == pytest.approx(1.0) for k in ("rouge1", "rouge2", "rougeL"))


def test_empty_prediction_scores_zero():
    assert M.corpus_bleu([""], ["the cat sat"]) == 0.0
    rouge = M.rouge_scores([""], ["the cat sat"])
    assert all(rouge[k][0] == 0.0 for k in rouge)
    assert M.map_label("", LABELS) == M.INVALID


def test_one_word_answer_bleu_is_meaningless_but_accuracy_is_not():
    # A correct one-word answer has no 2-, 3- or 4-grams: corpus BLEU is 0, accuracy is 1.
    assert M.corpus_bleu(["positive"], ["positive"]) == 0.0
    rouge = M.rouge_scores(["positive"], ["positive"])
    assert rouge["rouge1"][0] == 1.0 and rouge["rouge2"][0] == 0.0
    accuracy, macro_f1, invalid = M.sentiment_metrics([1], [M.map_label("Positive.", LABELS)], [0, 1])
    assert accuracy.value() == 1.0 and invalid.value() == 0.0


def test_rouge_hand_computed():
    # hyp "the cat" vs ref "the cat sat": unigram P = 1, R = 2/3 -> F1 = 0.8; bigram P = R = ... 1, 1/2
    rouge = M.rouge_scores(["the cat"], ["the cat sat"])
    assert rouge["rouge1"][0] == pytest.approx(0.8)
    assert rouge["rouge2"][0] == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert rouge["rougeL"][0] == pytest.approx(0.8)


def test_corpus_bleu_matches_sacrebleu():
    hyps = ["the cat sat on a mat today", "hello there", "", "a b c d e f"]
    refs = ["the cat sat on the mat", "hello world there", "x y", "a b c d e g"]
    expected = sacrebleu.corpus_bleu(hyps, [refs]).score
    assert M.corpus_bleu(hyps, refs) == pytest.approx(expected)


def test_evaluate_bleu_hand_computed():
    # evaluate's bleu: Google nmt compute_bleu on 13a tokens, max order 4, no smoothing, 0-1.
    # "the cat sat on the mat" vs "the cat sat on a mat": clipped matches 5/6, 3/5, 2/4, 1/3
    hyp, ref = "the cat sat on the mat", "the cat sat on a mat"
    expected = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert M.evaluate_bleu([hyp], [ref]) == pytest.approx(expected)  # 0.537
    # no matching 4-gram: 0 without smoothing; sacreBLEU's default (exp smoothing) gives credit
    assert M.evaluate_bleu(["the cat sat in the mat"], [ref]) == 0.0
    assert M.corpus_bleu(["the cat sat in the mat"], [ref]) > 10
    # brevity: all precisions 1 (4/4, 3/3, 2/2, 1/1), 4 tokens against 6 -> exp(1 - 6/4)
    assert M.evaluate_bleu(["the cat sat on"], ["the cat sat on the mat"]) == pytest.approx(math.exp(-0.5))
    # no 4-gram at all (one-word answers): 0, whatever the 1-gram precision
    assert M.evaluate_bleu(["positive", "negative"], ["positive", "negative"]) == 0.0
    # a corpus pools counts before dividing: 13a splits the final period off,
    # hyps "a b c d ." and "a b x" vs refs "a b c d ." and "a b y": 1-grams 7/8, 2-grams 5/6
    # (4 + a b), 3-grams 3/4, 4-grams 2/2 -> 8 tokens against 8
    value = M.evaluate_bleu(["a b c d.", "a b x"], ["a b c d.", "a b y"])
    assert value == pytest.approx((7 / 8 * 5 / 6 * 3 / 4 * 2 / 2) ** 0.25)
    assert M.evaluate_bleu([""], ["the cat"]) == 0.0


def test_evaluate_rouge_hand_computed():
    # evaluate's rouge: rouge-score without stemming; the project's own ROUGE stems
    plain = M.evaluate_rouge_scores(["The cats sat"], ["the cat sat"])
    assert plain["evaluate_rouge1"][0] == pytest.approx(2 / 3)  # the, sat of 3 each
    assert plain["evaluate_rouge2"][0] == 0.0  # "the cats", "cats sat" vs "the cat", "cat sat"
    assert plain["evaluate_rougeL"][0] == pytest.approx(2 / 3)
    assert M.rouge_scores(["The cats sat"], ["the cat sat"])["rouge1"][0] == pytest.approx(1.0)
    # rougeLsum takes the LCS per line (summary level); rougeL one LCS over the whole text
    swapped = M.evaluate_rouge_scores(["a b\nc d"], ["c d\na b"])
    assert swapped["evaluate_rougeL"][0] == pytest.approx(0.5)
    assert swapped["evaluate_rougeLsum"][0] == pytest.approx(1.0)


def test_sentiment_metrics_hand_computed():
    y_true = [1, 1, 0, 0, 1]
    y_pred = [1, 0, 0, M.INVALID, M.INVALID]
    accuracy, macro_f1, invalid = M.sentiment_metrics(y_true, y_pred, [0, 1])
    assert accuracy.value() == pytest.approx(2 / 5)
    assert invalid.value() == pytest.approx(2 / 5)
    # label 1: tp 1, fp 0, fn 2 -> F1 2/4; label 0: tp 1, fp 1, fn 1 -> F1 2/4
    assert macro_f1.value() == pytest.approx(0.5)


def test_bertscore_offline_perfect_empty_and_one_word(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    text = "The cat sat on the mat."
    f1 = M.bertscore_f1([text, "", "positive", "negative"], [text, "the cat", "positive", "positive"])
    assert f1[0] == pytest.approx(1.0, abs=1e-4)
    assert f1[1] == 0.0
    assert f1[2] == pytest.approx(1.0, abs=1e-4)
    assert 0.0 < f1[3] < 1.0


# --- bootstrap ------------------------------------------------------------------------------


def test_bootstrap_ci_contains_point_estimate_and_narrows_with_n():
    rng = np.random.default_rng(0)
    widths = []
    for n in (20, 200, 2000):
        metric = M.mean_metric("accuracy", (rng.random(n) < 0.7).astype(float))
        est = M.bootstrap_ci(metric, M.bootstrap_weights(n, 1000, seed=1))
        assert est.ci_low <= est.value <= est.ci_high
        widths.append(est.ci_high - est.ci_low)
    assert widths[0] > widths[1] > widths[2]


def test_bootstrap_recomputes_corpus_metrics_per_resample():
    hyps = ["the cat sat on the mat", "a dog ran", "hello world there", "x"]
    refs = ["the cat sat on the mat", "the dog ran away", "hello there world", "y z"]
    metric = M.bleu_metric(M.bleu_statistics(hyps, refs))
    weights = M.bootstrap_weights(len(hyps), 50, seed=3)
    dist = M.bootstrap_distribution(metric, weights)
    for w, value in zip(weights[:10], dist[:10], strict=True):
        idx = np.repeat(np.arange(len(hyps)), w.astype(int))
        expected = sacrebleu.corpus_bleu([hyps[i] for i in idx], [[refs[i] for i in idx]]).score
        assert value == pytest.approx(expected)
    study_bleu = M.evaluate_bleu_metric(M.bleu_statistics(hyps, refs))
    for w, value in zip(weights[:10], M.bootstrap_distribution(study_bleu, weights[:10]), strict=True):
        idx = np.repeat(np.arange(len(hyps)), w.astype(int))
        assert value == pytest.approx(M.evaluate_bleu([hyps[i] for i in idx], [refs[i] for i in idx]))
    y_true, y_pred = [1, 0, 1, 0, 1, 1], [1, 0, 0, -1, 1, 0]
    f1 = M.macro_f1_metric(y_true, y_pred, [0, 1])
    weights = M.bootstrap_weights(6, 20, seed=4)
    for w, value in zip(weights, M.bootstrap_distribution(f1, weights), strict=True):
        idx = np.repeat(np.arange(6), w.astype(int))
        again = M.macro_f1_metric([y_true[i] for i in idx], [y_pred[i] for i in idx], [0, 1])
        assert value == pytest.approx(again.value())


def test_paired_bootstrap_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 300)
    good = np.where(rng.random(300) < 0.9, truth, 1 - truth)
    bad = np.where(rng.random(300) < 0.55, truth, 1 - truth)
    weights = M.bootstrap_weights(300, 1000, seed=0)
    acc = lambda p: M.mean_metric("accuracy", (p == truth).astype(float))  # noqa: E731
    test = M.paired_bootstrap(acc(good), acc(bad), weights)
    assert test.delta > 0.2 and test.p_value < 0.01 and test.ci_low > 0
    same = M.paired_bootstrap(acc(good), acc(good), weights)
    assert same.delta == 0 and same.p_value == 1.0


# --- parameters ---------------------------------------------------------------------------


def test_reporting_params_are_validated_with_the_key_named():
    assert reporting_params(PARAMS).batch_size == 16
    with pytest.raises(ParameterError, match=r"eval_sets\.alpaca\.max_new_tokens: no generation budget .*\['alpaca'\]"):
        check_eval_sets({"max_new_tokens": {"sentiment": 4, "x": 2}}, {"sentiment": {}, "alpaca": {}})
    budgets = generation_settings({"max_new_tokens": {"sentiment": 4, "x": 2}}, {"sentiment": {}, "topic": {"max_new_tokens": 9}})
    assert budgets["max_new_tokens"] == {"sentiment": 4, "topic": 9}
    with pytest.raises(ParameterError, match="batch_size"):
        reporting_params({**PARAMS, "batch_size": 0})


def test_reporting_block_is_registered_for_the_hook():
    base = {
        "seed": 1,
        "variants": {"v": {"display_name": "V", "budget": 4, "mix": {"sentiment": 1.0}}},
        "sources": {"sentiment": {**SOURCES["sentiment"], "files": {"train": "t.jsonl", "test": "t.jsonl"}}},
        "eval_sets": {"sentiment": {"size": 4}},
    }
    with pytest.raises(ParameterError, match="reporting"):
        validate_parameters({**base, "reporting": {"max_new_tokens": {}, "bogus": 1}})


def test_pipeline_has_one_generation_namespace_per_model():
    pipe = create_pipeline(variants=["custom_only", "both_instructions", "new_one"])
    outputs = pipe.all_outputs()
    for model in ("base", "custom_only", "both_instructions", "new_one"):
        assert f"{model}.predictions" in outputs
    assert "new_one.adapter" in pipe.inputs()
    for name in ("metrics", "report", "table_A_csv", "table_C_md", "plot_sentiment", "study_comparison", "study_comparison_md"):
        assert name in outputs
    with pytest.raises(ValueError, match="base"):
        create_pipeline(variants=["base"])


# --- a small fixture run: predictions -> scores -> metrics -> tables, plots, report ------------


def _fixture_predictions(n_sentiment: int = 40) -> list[pd.DataFrame]:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, n_sentiment)
    frames = []
    for model, display, skill in (("base", "Base", 0.5), ("custom_only", "FT-CustomOnly", 0.95),
                                  ("both_instructions", "FT-BothInstruction", 0.8)):
        rows = []
        for i, y in enumerate(truth):
            right = rng.random() < skill
            word = LABELS[int(y)] if right else LABELS[1 - int(y)]
            answer = word.capitalize() + "." if model != "base" or i % 4 else "I think it is mixed"
            rows.append({"eval_set": "sentiment", "id": f"s{i:03d}", "prompt": f"tweet {i}",
                         "reference": LABELS[int(y)], "prediction": answer, "label": int(y)})
        for eval_set, count in (("out_of_sample", 10), ("alpaca", 12)):
            for i in range(count):
                ref = f"the answer number {i} is about cats and dogs"
                pred = ref if rng.random() < skill else f"something else {i}"
                rows.append({"eval_set": eval_set, "id": f"{eval_set[0]}{i:03d}", "prompt": f"do {i}",
                             "reference": ref, "prediction": pred if i else "", "label": None})
        frame = pd.DataFrame(rows)
        frame.insert(0, "display_name", display)
        frame.insert(0, "model", model)
        frame["prompt_text"] = frame["prompt"]
        frame["prompt_tokens"], frame["completion_tokens"], frame["reference_tokens"] = 10, 3, 3
        frame[nodes.BASE_WEIGHT_COLUMNS] = ["models/base", "4bit", "bfloat16", "0123456789abcdef"]
        frames.append(frame[nodes.PREDICTION_COLUMNS])
    return frames


@pytest.fixture
def fake_bertscore(monkeypatch):
    """ROUGE-1 stands in for BERTScore (the real one has its own test), keeping this fast."""
    monkeypatch.setattr(
        M, "bertscore_f1", lambda preds, refs, **kw: M.rouge_scores(preds, refs)["rouge1"]
    )


def test_report_renders_from_a_small_fixture_run(fake_bertscore):
    predictions = _fixture_predictions()
    scores = nodes.score_predictions(PARAMS, SOURCES, EVAL_SETS, *predictions)
    assert len(scores) == 3 * (40 + 10 + 12)
    metrics = nodes.compute_metrics(scores, PARAMS, seed=7)
    sentiment = metrics[metrics["eval_set"] == "sentiment"].set_index(["model", "metric"])
    assert set(metrics["metric"]) >= {"accuracy", "macro_f1", "invalid_rate", "bleu", "rougeL", "bertscore_f1"}
    assert sentiment.loc[("base", "invalid_rate"), "value"] == pytest.approx(10 / 40)
    acc = sentiment.loc[("custom_only", "accuracy")]
    assert acc["value"] > sentiment.loc[("base", "accuracy"), "value"]
    assert acc["p_value_vs_base"] < 0.05 and acc["delta_ci_low"] > 0
    assert (metrics["ci_low"] <= metrics["value"] + 1e-9).all()
    assert (metrics["value"] <= metrics["ci_high"] + 1e-9).all()
    assert metrics.loc[metrics["model"] == "base", "p_value_vs_base"].isna().all()
    # Holm within the comparisons of one table (an evaluation set's own metrics), the
    # study-comparable evaluate_* metrics a family of their own; the floor's resample count
    study = metrics["metric"].str.startswith("evaluate_")
    assert study.any()
    recall = metrics["metric"].str.startswith("recall/")  # each class's recall: a family of its own
    for _, family in metrics.groupby(["eval_set", study, recall]):
        tested = family["p_value_vs_base"].notna()
        assert np.allclose(family.loc[tested, "p_holm_vs_base"], stats.holm(family.loc[tested, "p_value_vs_base"]))
        assert (family.loc[tested, "p_holm_vs_base"] >= family.loc[tested, "p_value_vs_base"]).all()
    assert (metrics["bootstrap_resamples"] == 200).all()

    csv, markdown = nodes.build_table(metrics, eval_set="sentiment")
    assert list(csv["metric"][:3]) == ["accuracy", "macro_f1", "invalid_rate"]
    assert {"Base", "FT-CustomOnly", "FT-BothInstruction", "FT-CustomOnly p_vs_base"} <= set(csv.columns)
    assert "FT-CustomOnly p_holm_vs_base" in csv.columns
    assert "| Metric | Base | FT-CustomOnly | FT-BothInstruction |" in markdown
    shown = (metrics["eval_set"] == "sentiment") & ~study & ~recall
    tests = int(metrics.loc[shown, "p_value_vs_base"].notna().sum())
    assert f"family of the {tests} comparisons with the base model in this table" in markdown
    accuracy = markdown.split("| Accuracy |")[1].split("\n")[0]
    assert accuracy.count("Holm p") == 2
    # no resample of 200 was as extreme: the floor 1/201 prints as a bound, and so does Holm's
    # value computed from it (16 tests x 1/201 = 0.080)
    assert acc["p_value_vs_base"] == stats.p_floor(200) and tests == 16
    assert "(Δ +0.550, p < 0.005, Holm p ≤ 0.080)" in accuracy
    assert "BLEU" in markdown and "meaningless" in markdown
    figure = nodes.plot_metrics(metrics, "alpaca")
    assert len(figure.axes[0].patches) == 3 * 5  # 3 models x 5 metrics

    variants = {"custom_only": {"display_name": "FT-CustomOnly", "mix": {"sentiment": 1.0}},
                "both_instructions": {"display_name": "FT-BothInstruction", "mix": {"sentiment": 0.5, "alpaca": 0.5}}}
    curve, curve_md, curve_plot = nodes.build_forgetting_curve(metrics, variants, PARAMS)
    assert set(curve["alpaca_fraction"]) == {0.0, 0.5}
    assert "| 0.50 | FT-BothInstruction |" in curve_md
    chosen = {**PARAMS, "forgetting_curve_metrics": [{"eval_set": "alpaca", "metric": "bleu"}]}
    only_bleu, _, _ = nodes.build_forgetting_curve(metrics, variants, chosen)
    assert set(zip(only_bleu["eval_set"], only_bleu["metric"])) == {("alpaca", "bleu")} and len(only_bleu) == 2
    comparison, _ = nodes.build_study_comparison(metrics, None)
    html = nodes.build_report(metrics, curve, comparison, None, NO_BENCHMARKS, {"seed": 7, "reporting": {**PARAMS, "examples_per_set": 5}}, *predictions)
    assert html.count("<img alt='metrics for") == 3
    assert "Forgetting curve" in html and "<img alt='forgetting curve'" in html
    for title in ("Table A", "Table B", "Table C", "Run parameters", "Example predictions"):
        assert title in html
    assert html.count("<table class='ex'>") == 3
    example_table = html.split("<table class='ex'>")[1].split("</table>")[0]
    assert example_table.count("<tr>") == 1 + 5  # header + five examples, one column per model
    assert "&quot;resamples&quot;: 200" in html


def test_metrics_are_paired_on_the_common_examples(fake_bertscore):
    predictions = _fixture_predictions(12)
    predictions[1] = predictions[1].iloc[1:]  # one variant missed an example
    scores = nodes.score_predictions(PARAMS, SOURCES, EVAL_SETS, *predictions)
    metrics = nodes.compute_metrics(scores, PARAMS, seed=1)
    assert set(metrics.loc[metrics["eval_set"] == "sentiment", "n"]) == {11}
    assert not math.isnan(metrics.loc[metrics["model"] == "custom_only", "p_value_vs_base"].iloc[0])


# --- study-comparable figures and the reference study ------------------------------------------


def _project_parameters(env: str) -> dict:
    from kedro.config import OmegaConfigLoader

    from tests.conftest import PROJECT_ROOT

    return OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local", env=env)["parameters"]


def test_study_comparison_sits_beside_the_run_and_stays_out_of_tables_a_b_c(fake_bertscore):
    predictions = _fixture_predictions()
    scores = nodes.score_predictions(PARAMS, SOURCES, EVAL_SETS, *predictions)
    metrics = nodes.compute_metrics(scores, PARAMS, seed=7)
    alpaca = metrics[metrics["eval_set"] == "alpaca"].set_index(["model", "metric"])
    rows = scores[(scores["eval_set"] == "alpaca") & (scores["model"] == "base")]
    # the study-comparable figures, with CIs and paired tests like every metric
    assert alpaca.loc[("base", "evaluate_bleu"), "value"] == pytest.approx(
        M.evaluate_bleu(list(rows["prediction"]), list(rows["reference"])))
    assert alpaca.loc[("base", "evaluate_rougeL"), "value"] == pytest.approx(rows["evaluate_rougeL"].mean())
    assert not np.isnan(alpaca.loc[("custom_only", "evaluate_bleu"), "p_value_vs_base"])
    csv, _ = nodes.build_table(metrics, eval_set="alpaca")
    assert not any(m.startswith("evaluate_") for m in csv["metric"])

    study = _project_parameters("llama2")["reference_study"]
    comparison, markdown = nodes.build_study_comparison(metrics, study)
    assert len(comparison) == 3 * 3 * 3  # sets x study columns x models
    cell = comparison.set_index(["eval_set", "study_metric", "model"])
    assert cell.loc[("alpaca", "BLEU", "base"), "study_value"] == 0.41
    assert cell.loc[("sentiment", "ROUGE", "custom_only"), "metric"] == "evaluate_rougeL"
    assert cell.loc[("alpaca", "BLEU", "base"), "value"] == alpaca.loc[("base", "evaluate_bleu"), "value"]
    assert cell.loc[("out_of_sample", "BERTScore", "both_instructions"), "study_value"] == 0.78
    assert "| Set | Metric | Base | Base (study) | FT-CustomOnly | FT-CustomOnly (study) |" in markdown
    assert "| C alpaca | BLEU: BLEU (evaluate, 0-1) |" in markdown and "| 0.41 |" in markdown
    assert "| 0.00 |" in markdown and "| 0.992 |" in markdown
    assert "FT-CustomOnly 48 min" in markdown

    curve = pd.DataFrame()
    parameters = {"seed": 7, "reporting": PARAMS, "reference_study": study}
    html = nodes.build_report(metrics, curve, comparison, None, NO_BENCHMARKS, parameters, *predictions)
    assert "<h2 id='study'>Against the reference study</h2>" in html
    assert "<td>BERTScore: BERTScore F1</td>" in html and "0.999" in html
    assert "Base weights of every model (3 checked)" in html and "0123456789abcdef" in html

    without, text = nodes.build_study_comparison(metrics, None)  # the demo: no study configured
    assert without["study_value"].isna().all() and "(study)" not in text
    assert "No reference study configured" in text


def test_reference_study_parameters_are_checked():
    from mift_kedro.pipelines.reporting.params import reference_study

    with pytest.raises(ParameterError, match="figures.alpaca has columns"):
        reference_study({"figures": {"alpaca": {"METEOR": {"base": 0.1}}}})
    with pytest.raises(ParameterError, match="reference_study"):
        reference_study({"metrics": {"ROUGE": "rouge_not_a_metric"}})


def test_llama2_generation_budgets_and_set_sizes():
    params = _project_parameters("llama2")
    assert reporting_params(params["reporting"]).max_new_tokens["sentiment"] >= 32
    assert params["eval_sets"] == {"sentiment": {"size": 1000, "table": "A"}, "out_of_sample": {"size": None, "table": "B"},
                                   "alpaca": {"size": 300, "table": "C"}}
    bertscore = params["reporting"]["bertscore"]
    assert (bertscore["model_type"], bertscore["num_layers"], bertscore["rescale_with_baseline"]) == (
        "roberta-large", 17, False)
    assert _project_parameters("local")["eval_sets"]["sentiment"] == {"size": 200, "table": "A"}  # the demo keeps its own


# --- one set of base weights for every row ------------------------------------------------------


def test_scoring_refuses_models_generated_on_different_base_weights(fake_bertscore):
    predictions = _fixture_predictions(6)
    predictions[2] = predictions[2].assign(base_quantization="none", base_dtype="float32", base_checksum="fedcba9876543210")
    with pytest.raises(ParameterError, match=r"reporting\.quantization") as error:
        nodes.score_predictions(PARAMS, SOURCES, EVAL_SETS, *predictions)
    assert "both_instructions: models/base (none, float32, checksum fedcba9876543210)" in str(error.value)
    predictions[2] = predictions[2].assign(base_quantization="4bit", base_dtype="bfloat16")
    with pytest.raises(ParameterError, match="point `base_model` at the base the adapters were trained on"):
        nodes.score_predictions(PARAMS, SOURCES, EVAL_SETS, *predictions)
    with pytest.raises(ValueError, match="older version"):
        nodes.score_predictions(PARAMS, SOURCES, EVAL_SETS, *[p.drop(columns="base_checksum") for p in predictions])


def test_the_base_rows_quantization_is_what_the_adapters_ran_on():
    def ran_on(model: str, quantization: str) -> pd.DataFrame:
        return pd.DataFrame({"model": [model], "base_quantization": [quantization]})

    auto = {**PARAMS, "quantization": "auto"}
    assert nodes.base_quantization(auto, ran_on("a", "4bit"), ran_on("b", "4bit")) == "4bit"
    assert nodes.base_quantization(auto, ran_on("a", "none")) == "none"
    assert nodes.base_quantization(auto) == "none"  # no adapter: full precision
    with pytest.raises(ParameterError, match=r"different quantizations \{'a': 'none', 'b': '4bit'\}.*set `reporting.quantization`"):
        nodes.base_quantization(auto, ran_on("a", "none"), ran_on("b", "4bit"))
    forced = {**PARAMS, "quantization": "none"}
    assert nodes.base_quantization(forced, ran_on("a", "none"), ran_on("b", "4bit")) == "none"
