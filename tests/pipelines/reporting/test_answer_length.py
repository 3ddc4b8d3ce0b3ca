"""The sentiment task's wording and optional system prompt are parameters (conf/llama2 asks for
one word), and the reporting reports each model's answer length per evaluation set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from mift_kedro.pipelines.data_engineering.nodes import classification_pool
from mift_kedro.pipelines.data_engineering.params import SourceSpec
from mift_kedro.pipelines.reporting import nodes
from mift_kedro.pipelines.reporting import report as R
from tests.conftest import PROJECT_ROOT

TWEETS = pd.DataFrame({"text": ["what a day", "so sad"], "feeling": [1, 0]})


def test_template_system_prompt_opens_every_prompt():
    spec = {"kind": "classification", "files": {"test": "t.jsonl"}, "fields": {"text": "text", "label": "feeling"},
            "labels": {0: "negative", 1: "positive"}, "template": "Classify.\n\n{text}", "system": "One word."}
    frame = classification_pool(TWEETS, SourceSpec(**spec), "sentiment", "test")
    assert frame["prompt"].iloc[0] == [
        {"role": "system", "content": "One word."}, {"role": "user", "content": "Classify.\n\nwhat a day"},
    ]
    without = classification_pool(TWEETS, SourceSpec(**{k: v for k, v in spec.items() if k != "system"}), "sentiment", "test")
    assert without["prompt"].iloc[1] == [{"role": "user", "content": "Classify.\n\nso sad"}]


def test_llama2_asks_for_one_word_in_a_system_prompt():
    conf = yaml.safe_load((PROJECT_ROOT / "conf/llama2/parameters_data_engineering.yml").read_text())
    sentiment = conf["sources"]["sentiment"]
    assert "one word" in sentiment["system"].lower() and "one word" in sentiment["template"].lower()
    base = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_data_engineering.yml").read_text())
    assert sentiment["labels"] == base["sources"]["sentiment"]["labels"]  # the same answers


def test_answer_length_per_model_and_set_is_reported_without_a_test(monkeypatch):
    from mift_kedro.pipelines.reporting import metrics as M

    monkeypatch.setattr(M, "bertscore_f1", lambda preds, refs, **kw: M.rouge_scores(preds, refs)["rouge1"])
    rows = []
    for model, answer in (("base", "Sure! The sentiment of this tweet is: positive"), ("custom_only", "positive")):
        for i in range(6):
            rows.append({"model": model, "display_name": model, "eval_set": "sentiment", "id": f"s{i}",
                         "label": 1, "prediction": answer, "reference": "positive"})
    predictions = pd.DataFrame(rows).assign(
        prompt="p", prompt_text="p", prompt_tokens=3, completion_tokens=2, reference_tokens=1,
        base_ref="b", base_quantization="none", base_dtype="float32", base_checksum="c",
    )
    params = {"max_new_tokens": {"sentiment": 4, "out_of_sample": 4, "alpaca": 4},
              "bootstrap": {"resamples": 50, "confidence": 0.95}}
    sources = {"sentiment": {"kind": "classification", "files": {"test": "t.jsonl"},
                             "labels": {0: "negative", 1: "positive"}}}
    scores = nodes.score_predictions(params, sources, {"sentiment": {"table": "A"}}, predictions)
    metrics = nodes.compute_metrics(scores, params, seed=0).set_index(["model", "metric"])
    assert metrics.loc[("base", "answer_words"), "value"] == 8
    variant = metrics.loc[("custom_only", "answer_words")]
    assert variant["value"] == 1 and variant["delta_vs_base"] == -7
    assert np.isnan(variant["p_value_vs_base"]) and np.isnan(variant["p_holm_vs_base"])
    table = R.table_frame(metrics.reset_index(), "sentiment")
    assert table.set_index("metric").loc["answer_words", "custom_only"] == pytest.approx(1)
