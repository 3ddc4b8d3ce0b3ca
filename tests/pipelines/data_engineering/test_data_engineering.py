"""data_engineering: validation, templating, mixing, evaluation sets, and real Kedro runs."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DatasetError

from mift_kedro.config import ParameterError, variant_spec
from mift_kedro.datasets import HubOrLocalDataset, read_jsonl
from mift_kedro.parameters import validate_parameters
from mift_kedro.pipelines.data_engineering import nodes
from mift_kedro.pipelines.data_engineering.params import source_spec

SENTIMENT = {
    "kind": "classification", "files": {"train": "twitter_sentiment/train.jsonl"},
    "fields": {"text": "text", "label": "feeling"}, "labels": {0: "negative", 1: "positive"},
    "template": "Classify the tweet.\n\n{text}",
}
ALPACA = {"kind": "instruction", "files": {"train": "alpaca/train.jsonl"}}
SOURCES = {"sentiment": SENTIMENT, "alpaca": ALPACA}


def clean_tweets(raw: pd.DataFrame, name: str = "t") -> pd.DataFrame:
    return nodes.classification_pool(raw, source_spec(SENTIMENT), name)


def clean_alpaca(raw: pd.DataFrame) -> pd.DataFrame:
    return nodes.instruction_pool(raw, source_spec(ALPACA), "alpaca")


def mix(sentiment_pool, alpaca_pool, variant, seed, evals=()):
    return nodes.mix_training_set(
        variant, seed, SOURCES, sentiment_pool, alpaca_pool, *evals,
        pools=["sentiment", "alpaca"], evals=[f"e{i}" for i in range(len(evals))],
    )


@pytest.fixture(scope="module")
def tweets(shared_data) -> pd.DataFrame:
    return read_jsonl(shared_data / "twitter_sentiment" / "train.jsonl")


@pytest.fixture(scope="module")
def sentiment_pool(tweets) -> pd.DataFrame:
    return clean_tweets(tweets, "sentiment")


@pytest.fixture(scope="module")
def alpaca_pool(shared_data) -> pd.DataFrame:
    return clean_alpaca(read_jsonl(shared_data / "alpaca" / "train.jsonl"))


# --- reading raw data --------------------------------------------------------------------


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok", "feeling": 1}\n{"text": "broken", \n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: malformed JSON line"):
        read_jsonl(path)


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "tweets.jsonl"
    path.write_text('{"text": "ok"}\n')
    with pytest.raises(ValueError, match=r"missing column\(s\) \['feeling'\]"):
        read_jsonl(path, ["text", "feeling"])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['feeling'\].*sources\.t\.fields"):
        clean_tweets(pd.DataFrame({"text": ["ok"]}))


def test_local_dataset_reads_mift_data_dir(shared_data, monkeypatch):
    monkeypatch.setenv("MIFT_DATA_DIR", str(shared_data))
    dataset = HubOrLocalDataset(
        hub_id="carblacac/twitter-sentiment-analysis", hub_split="test",
        local_path="twitter_sentiment/test.jsonl", columns=["text", "feeling"],
    )
    frame = dataset.load()
    assert list(frame.columns) == ["text", "feeling"]
    assert len(frame) == 1023
    assert dataset.exists()


def test_local_dataset_missing_file_names_the_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("MIFT_DATA_DIR", str(tmp_path))
    dataset = HubOrLocalDataset(hub_id="x/y", hub_split="train", local_path="alpaca/train.jsonl", columns=["a"])
    with pytest.raises(DatasetError, match="has no alpaca/train.jsonl"):
        dataset.load()


@pytest.mark.parametrize("offline_env", [{"HF_ENDPOINT": "http://127.0.0.1:9"}, {"HF_HUB_OFFLINE": "1"}])
def test_no_network_fails_fast_naming_mift_data_dir(monkeypatch, offline_env):
    monkeypatch.delenv("MIFT_DATA_DIR", raising=False)
    for key, value in offline_env.items():
        monkeypatch.setenv(key, value)
    dataset = HubOrLocalDataset(
        hub_id="tatsu-lab/alpaca", hub_split="train", local_path="alpaca/train.jsonl",
        columns=["instruction", "input", "output"], holdout={"size": 10, "seed": 0, "part": "test"},
        timeout=3,
    )
    start = time.monotonic()
    with pytest.raises(DatasetError, match="MIFT_DATA_DIR"):
        dataset.load()
    assert time.monotonic() - start < 10


def test_hub_holdout_is_deterministic_and_disjoint():
    frame = pd.DataFrame({"instruction": [f"i{k}" for k in range(50)]})
    make = lambda part: HubOrLocalDataset(  # noqa: E731
        hub_id="x", hub_split="train", local_path="x", columns=["instruction"],
        holdout={"size": 10, "seed": 7, "part": part},
    )._holdout_part(frame)
    test, train = make("test"), make("train")
    assert len(test) == 10 and len(train) == 40
    assert set(test["instruction"]).isdisjoint(train["instruction"])
    assert make("test").equals(test)


# --- validation filters ------------------------------------------------------------------


def test_clean_tweets_drops_and_logs_bad_rows(caplog):
    raw = pd.DataFrame(
        {
            "text": ["good day", "  ", None, "no label", "string label", "good day", "I &quot;love&quot; it"],
            "feeling": [1, 0, 1, None, "0", 1, 1.0],
        }
    )
    with caplog.at_level(logging.WARNING):
        clean = clean_tweets(raw, name="t")
    assert clean["text"].tolist() == ["good day", "string label", 'I "love" it']
    assert clean["label"].tolist() == [1, 0, 1]  # "0" and 1.0 are the map's labels 0 and 1
    messages = caplog.text
    assert "dropped 2 row(s) with empty or non-string `text`" in messages
    assert "dropped 1 row(s) with no `feeling`" in messages
    assert "dropped 1 row(s) with duplicate text" in messages
    with pytest.raises(ParameterError, match=r"sources\.t\.labels: the data has label\(s\) \['2'\]"):
        clean_tweets(pd.DataFrame({"text": ["a", "b"], "feeling": [1, 2]}))


def test_clean_alpaca_drops_empty_outputs_of_the_real_sample(shared_data, caplog):
    raw = read_jsonl(shared_data / "alpaca" / "train.jsonl")
    with caplog.at_level(logging.WARNING):
        clean = clean_alpaca(raw)
    assert len(clean) == len(raw) - 3  # the three empty outputs of the source
    assert "dropped 3 row(s) with empty `output`" in caplog.text


# --- templating --------------------------------------------------------------------------


def test_template_sentiment_is_a_conversation(tweets, sentiment_pool):
    row = sentiment_pool.iloc[0]
    text = " ".join(tweets["text"].iloc[0].split())  # whitespace runs collapsed
    assert row["prompt"] == [{"role": "user", "content": f"Classify the tweet.\n\n{text}"}]
    expected = "positive" if tweets["feeling"].iloc[0] == 1 else "negative"
    assert row["text"] == text
    assert row["completion"] == [{"role": "assistant", "content": expected}]
    assert set(sentiment_pool["completion"].map(lambda m: m[0]["content"])) == {"positive", "negative"}
    assert sentiment_pool["id"].is_unique


def test_template_alpaca_keeps_its_fields(alpaca_pool, shared_data):
    raw = read_jsonl(shared_data / "alpaca" / "train.jsonl")
    with_input = raw[raw["input"] != ""].iloc[0]
    row = alpaca_pool[alpaca_pool["prompt"].map(lambda m: m[0]["content"].startswith(with_input["instruction"]))].iloc[0]
    assert row["prompt"][0]["content"] == f"{with_input['instruction'].strip()}\n\n{with_input['input'].strip()}"
    assert row["completion"][0]["content"] == with_input["output"]


# --- mixing ------------------------------------------------------------------------------

BOTH = {"display_name": "FT-BothInstruction", "budget": 101, "mix": {"sentiment": 0.5, "alpaca": 0.5}}
CUSTOM = {"display_name": "FT-CustomOnly", "budget": 100, "mix": {"sentiment": 1.0}}


def test_mix_ratios_budget_and_balance(sentiment_pool, alpaca_pool):
    mixed, report = mix(sentiment_pool, alpaca_pool, BOTH, seed=1)
    assert len(mixed) == 101 == report["examples"]
    assert report["by_source"] in ({"alpaca": 50, "sentiment": 51}, {"alpaca": 51, "sentiment": 50})
    labels = report["by_label"]["sentiment"]
    assert abs(labels["0"] - labels["1"]) <= 1
    custom, custom_report = mix(sentiment_pool, alpaca_pool, CUSTOM, seed=1)
    assert custom_report["by_source"] == {"sentiment": 100}
    assert custom_report["by_label"] == {"sentiment": {"0": 50, "1": 50}}
    assert custom_report["removed_eval_overlap"] == {"sentiment": 0}
    assert mixed["id"].is_unique and custom["id"].is_unique


def test_mix_is_deterministic_under_the_seed(sentiment_pool, alpaca_pool):
    first, _ = mix(sentiment_pool, alpaca_pool, BOTH, seed=3)
    again, _ = mix(sentiment_pool, alpaca_pool, BOTH, seed=3)
    other, _ = mix(sentiment_pool, alpaca_pool, BOTH, seed=4)
    assert first["id"].tolist() == again["id"].tolist()
    assert set(first["id"]) != set(other["id"])


def test_same_seed_gives_nested_sentiment_subsets(sentiment_pool, alpaca_pool):
    """A smaller sentiment share is a subset of a larger one: variants differ only by the mix."""
    custom, _ = mix(sentiment_pool, alpaca_pool, {**CUSTOM, "budget": 100}, seed=5)
    both, _ = mix(sentiment_pool, alpaca_pool, {**BOTH, "budget": 100}, seed=5)
    assert set(both.loc[both["source"] == "sentiment", "id"]) <= set(custom["id"])


def test_budget_larger_than_the_data_is_an_error(sentiment_pool, alpaca_pool):
    too_big = {**BOTH, "budget": 2 * (len(alpaca_pool) + 10)}
    with pytest.raises(ValueError, match=r"only .* are available; lower the `budget` of variant 'FT-BothInstruction' \(`variants\.<name>\.budget`\)"):
        mix(sentiment_pool, alpaca_pool, too_big, seed=0)


@pytest.mark.parametrize(
    ("mix", "message"),
    [
        ({"sentiment": 1.5, "alpaca": -0.5}, r"must lie in \[0, 1\]"),
        ({"sentiment": 0.5, "alpaca": 0.4}, "must sum to 1"),
    ],
)
def test_bad_mix_parameters_are_named(mix, message):
    with pytest.raises(ParameterError, match=message):
        variant_spec({"display_name": "x", "budget": 10, "mix": mix})


def test_project_parameters_validate_and_errors_name_the_key():
    from kedro.config import OmegaConfigLoader

    params = OmegaConfigLoader(str(Path(__file__).parents[3] / "conf"), base_env="base", default_run_env="local")["parameters"]
    validate_parameters(params)
    params["variants"]["custom_only"]["mix"] = {"sentiment": 2.0}
    with pytest.raises(ParameterError, match=r"variants\.custom_only\.mix"):
        validate_parameters(params)


# --- evaluation sets -----------------------------------------------------------------------


def test_eval_sets(sentiment_pool, alpaca_pool):
    def build_sentiment_eval(pool, spec, seed):
        return nodes.build_eval_set(pool, spec, SENTIMENT, seed, "sentiment")

    def build_alpaca_eval(pool, spec, seed):
        return nodes.build_eval_set(pool, spec, ALPACA, seed, "alpaca")

    sentiment = build_sentiment_eval(sentiment_pool, {"size": 20}, seed=0)
    assert len(sentiment) == 20 and sentiment["label"].value_counts().to_dict() == {0: 10, 1: 10}
    assert len(build_alpaca_eval(alpaca_pool, {"size": 7}, seed=0)) == 7
    assert len(build_alpaca_eval(alpaca_pool, {"size": None}, seed=0)) == len(alpaca_pool)
    with pytest.raises(ValueError, match="evaluation set 'alpaca' is empty"):
        build_alpaca_eval(alpaca_pool.iloc[:0], {"size": 5}, seed=0)
    with pytest.raises(ValueError, match="eval_sets.sentiment.size: 10 exceeds the 5 rows available; lower it"):
        build_sentiment_eval(sentiment_pool.iloc[:5], {"size": 10}, seed=0)
    # enough rows, too few of one label for a balanced set: still the evaluation set's parameter
    lopsided = pd.concat([sentiment_pool[sentiment_pool["label"] == 1].iloc[:25],
                          sentiment_pool[sentiment_pool["label"] == 0].iloc[:5]])
    with pytest.raises(ValueError, match=r"\(label 0\): needs 10 examples but only 5 .*lower `eval_sets\.sentiment\.size`") as error:
        build_sentiment_eval(lopsided, {"size": 20}, seed=0)
    assert "budget" not in str(error.value)


def test_out_of_sample_instructions_cover_ten_task_types():
    raw = pd.read_json(Path(__file__).parents[3] / "data/01_raw/out_of_sample_instructions.jsonl", lines=True, dtype=False)
    spec = {"kind": "instruction", "files": {"test": "x.jsonl"}, "fields": {"id": "id", "group": "task_type"}}
    pool = nodes.instruction_pool(raw, source_spec(spec), "out_of_sample")
    evaluation = nodes.build_eval_set(pool, {"size": None}, spec, 0, "out_of_sample")
    assert len(evaluation) == 10
    assert evaluation["source"].nunique() == 10
    assert evaluation["id"].tolist() == [f"oos-{k:02d}" for k in range(1, 11)]
    assert all(m[0]["content"].strip() for m in evaluation["completion"])
    with pytest.raises(ValueError, match="'out_of_sample' is empty"):
        nodes.build_eval_set(pool.iloc[:0], {"size": None}, spec, 0, "out_of_sample")


# --- the pipeline through Kedro ------------------------------------------------------------


def _run(project: Path, **kwargs):
    bootstrap_project(project)
    with KedroSession.create(project_path=project) as session:
        return session.run(pipeline_names=["data_engineering"], **kwargs)


def test_registry_lists_the_pipelines(kedro_project):
    from kedro.framework.project import pipelines

    bootstrap_project(kedro_project)
    with KedroSession.create(project_path=kedro_project) as session:
        session.load_context()  # the base environment's parameters, whatever an earlier test ran
    assert {"data_engineering", "training", "reporting", "__default__"} <= set(pipelines)
    namespaces = {n.namespace for n in pipelines["data_engineering"].nodes if n.namespace}
    assert namespaces == {"custom_only", "both_instructions"}


@pytest.mark.slow
def test_run_twice_keeps_both_versions(kedro_project):
    _run(kedro_project)
    _run(kedro_project)
    for variant in ("custom_only", "both_instructions"):
        versions = sorted((kedro_project / f"data/05_model_input/{variant}/training_set.jsonl").iterdir())
        assert len(versions) == 2
        report = json.loads((kedro_project / f"data/08_reporting/{variant}/mix_report.json" / versions[-1].name / "mix_report.json").read_text())
        assert report["examples"] == 256
    for eval_set in ("sentiment", "out_of_sample", "alpaca"):
        assert len(list((kedro_project / f"data/05_model_input/eval/{eval_set}.jsonl").iterdir())) == 2


@pytest.mark.slow
def test_bad_parameters_fail_before_any_work(kedro_project):
    params = kedro_project / "conf" / "local" / "parameters.yml"
    params.write_text("variants:\n  custom_only:\n    display_name: x\n    budget: 10\n    mix: {sentiment: 1.2}\n")
    with pytest.raises(ParameterError, match=r"must lie in \[0, 1\]"):
        _run(kedro_project)
    assert not (kedro_project / "data" / "03_primary").exists()


@pytest.mark.slow
def test_offline_run_without_data_dir_fails_fast(kedro_project, monkeypatch):
    monkeypatch.delenv("MIFT_DATA_DIR")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(Exception, match="MIFT_DATA_DIR"):
        _run(kedro_project)
    assert time.monotonic() - start < 30
