"""Project hooks: per-pipeline timing kept as data, the run's parameters kept with it, and
the Hub preflight before the first node."""

import json
import logging
import time

import pandas as pd
import pytest
import yaml
from huggingface_hub import HfApi
from kedro.config import OmegaConfigLoader
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog
from kedro.pipeline import Node, Pipeline
from kedro_datasets.json import JSONDataset

from mift_kedro import config, models
from mift_kedro.config import ParameterError
from mift_kedro.hooks import (
    HubPreflightHooks,
    ParameterValidationHooks,
    PipelineTimingHooks,
    RunParametersHooks,
    hub_requirements,
    missing_inputs,
    missing_inputs_message,
)
from mift_kedro.hub import HubUnreachableError
from mift_kedro.pipelines import data_engineering, reporting, training
from mift_kedro.pipelines.data_engineering import nodes as de_nodes
from mift_kedro.pipelines.reporting import benchmark
from mift_kedro.pipelines.training import nodes as training_nodes
from tests import processes
from tests.conftest import PROJECT_ROOT, hub_cache_repo


def test_time_is_summed_per_pipeline_and_saved(caplog, tmp_path):
    catalog = DataCatalog({"pipeline_timings": JSONDataset(filepath=str(tmp_path / "timings.json"))})
    hooks = PipelineTimingHooks()
    hooks.before_pipeline_run({}, None, catalog)
    clean = Node(de_nodes.overlap_key, "a", "b", name="clean")
    train = Node(training_nodes.train_adapter, ["c", "d", "e", "f", "g"], ["h", "i"], name="train")
    for node in (clean, train, clean):
        hooks.before_node_run(node)
        hooks.after_node_run(node)
    assert set(hooks.seconds) == {"data_engineering", "training"}
    with caplog.at_level(logging.INFO, logger="mift_kedro.hooks"):
        hooks.after_pipeline_run({"env": "local", "pipeline_names": ["__default__"]}, None, catalog)
    assert "Time per pipeline: data_engineering" in caplog.text and "training" in caplog.text
    saved = catalog.load("pipeline_timings")
    assert set(saved["seconds"]) == {"data_engineering", "training"}
    assert set(saved["node_seconds"]) == {"clean", "train"}
    assert saved["total_node_s"] == round(sum(hooks.seconds.values()), 2)
    assert saved["pipeline_wall_s"] >= saved["total_node_s"] - 0.01
    assert saved["env"] == "local" and saved["pipelines"] == ["__default__"] and saved["host"]["cpu_count"] >= 1 and saved["host"]["cpu"]


def test_validated_parameters_are_saved_with_the_run(tmp_path):
    from kedro.config import OmegaConfigLoader

    params = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local")["parameters"]
    catalog = DataCatalog({"run_parameters": JSONDataset(filepath=str(tmp_path / "params.json"))})
    catalog["parameters"] = params
    ParameterValidationHooks().before_pipeline_run({}, None, catalog)
    assert not catalog.exists("run_parameters")  # saved only once every check has passed
    RunParametersHooks().before_pipeline_run({}, None, catalog)
    assert catalog.load("run_parameters") == json.loads(json.dumps(params))


# --- the Hub preflight ---------------------------------------------------------------------

LLAMA2_SHA = "351844e75ed0bcbbe3f10671b3c808d2b83894ee"
ALPACA_SHA = "dce01c9b08f87459cf36a430d809084718273017"
VARIANTS = ["custom_only", "both_instructions"]


def _setup(env: str, *pipeline_names: str):
    """The project's catalog and parameters of ``env``, and its pipelines by name."""
    conf = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local", env=env)
    config.set_active_config_loader(conf)  # as the hook does: the sources' datasets read their parameters
    catalog = DataCatalog.from_config(conf["catalog"])
    catalog["parameters"] = conf["parameters"]
    modules = {"data_engineering": data_engineering, "training": training, "reporting": reporting}
    pipe = sum((modules[name].create_pipeline(variants=VARIANTS) for name in pipeline_names), Pipeline([]))
    return pipe, catalog


ALL = ("data_engineering", "training", "reporting")


def _repos(pipe, catalog) -> set[str]:
    return {str(r.repo) for r in hub_requirements(pipe, catalog, catalog.load("parameters"))}


def test_preflight_offline_lists_every_missing_thing_in_one_error(offline_hub, monkeypatch, caplog):
    monkeypatch.delenv("MIFT_DATA_DIR", raising=False)
    pipe, catalog = _setup("llama2", *ALL)
    benchmark.task_manager()  # lm-eval's task index, built once per process: not time spent on the Hub
    start = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(HubUnreachableError) as error:
        HubPreflightHooks().before_pipeline_run({}, pipe, catalog)
    assert time.monotonic() - start < 5
    message = str(error.value)
    assert message.startswith("8 thing(s) this run needs from the Hugging Face Hub")
    for expected in (
        f"base model NousResearch/Llama-2-7b-chat-hf (revision {LLAMA2_SHA}) [base_model]",
        f"hf download NousResearch/Llama-2-7b-chat-hf --revision {LLAMA2_SHA}",
        "raw dataset carblacac/twitter-sentiment-analysis [sentiment_raw]",
        f"raw dataset tatsu-lab/alpaca (revision {ALPACA_SHA}) [alpaca_raw]",
        "MIFT_DATA_DIR=<dir>",
        "BERTScore model roberta-large [reporting.bertscore.model_type]",
        "hf download roberta-large", "reporting.bertscore.model_type: null",
        "HF_HUB_OFFLINE is set",
        "benchmark dataset allenai/ai2_arc [reporting.benchmarks.tasks.arc_easy, reporting.benchmarks.tasks.arc_challenge]",
        "benchmark dataset cais/mmlu [reporting.benchmarks.tasks.mmlu]", "hf download Rowan/hellaswag --repo-type dataset",
        "allenai/winogrande", "set MIFT_DATA_DIR and give the task local ai2_arc-schema files",
    ):
        assert expected in message, expected
    assert message.count("\n  - ") == 8
    assert "Not pinned to a revision" in caplog.text
    assert "carblacac/twitter-sentiment-analysis (hub_revisions in conf/<env>/globals.yml)" in caplog.text
    assert "roberta-large" not in caplog.text  # bert-score cannot pin it: no warning


def test_preflight_asks_an_unreachable_hub_once(monkeypatch):
    monkeypatch.delenv("MIFT_DATA_DIR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    calls = []
    real = HfApi.repo_info
    monkeypatch.setattr(HfApi, "repo_info", lambda self, *a, **k: calls.append(a) or real(self, *a, **k))
    pipe, catalog = _setup("llama2", "data_engineering")
    start = time.monotonic()
    with pytest.raises(HubUnreachableError, match="the Hugging Face Hub is unreachable") as error:
        HubPreflightHooks().before_pipeline_run({}, pipe, catalog)
    assert time.monotonic() - start < 5
    assert len(calls) == 1 and str(error.value).count("\n  - ") == 2


def _llama2_cache(offline_hub) -> None:
    """The llama2 run's Hub items, laid out in the caches as the libraries leave them."""
    index = {"metadata": {}, "weight_map": {f"layer.{s}": f"model-{s}.safetensors" for s in ("a", "b")}}
    files = {"config.json": b'{"model_type": "llama"}', "tokenizer.json": b"{}", "tokenizer_config.json": b"{}",
             "model.safetensors.index.json": json.dumps(index).encode()}
    files |= {f"model-{s}.safetensors": s.encode() for s in ("a", "b")}
    hub_cache_repo(offline_hub.hub, "NousResearch/Llama-2-7b-chat-hf", files, sha=LLAMA2_SHA)
    hub_cache_repo(offline_hub.hub, "roberta-large",
                   {"config.json": b"{}", "vocab.json": b"{}", "merges.txt": b"", "model.safetensors": b"w"},
                   sha="3" * 40)
    benchmarks = ("allenai___ai2_arc", "Rowan___hellaswag", "cais___mmlu", "allenai___winogrande")
    for name in ("carblacac___twitter-sentiment-analysis", "tatsu-lab___alpaca", *benchmarks):
        (offline_hub.datasets / name / "default" / "0.0.0" / "abc").mkdir(parents=True)


def test_preflight_passes_when_the_caches_hold_everything(offline_hub, monkeypatch, caplog):
    monkeypatch.delenv("MIFT_DATA_DIR", raising=False)
    _llama2_cache(offline_hub)
    pipe, catalog = _setup("llama2", *ALL)
    with caplog.at_level(logging.INFO, logger="mift_kedro.hooks"):
        HubPreflightHooks().before_pipeline_run({}, pipe, catalog)
    assert "Hub preflight: NousResearch/Llama-2-7b-chat-hf" in caplog.text

    # A half-downloaded sharded checkpoint is not "cached"
    (offline_hub.hub / "models--NousResearch--Llama-2-7b-chat-hf" / "snapshots" / LLAMA2_SHA / "model-b.safetensors").unlink()
    with pytest.raises(HubUnreachableError, match=r"^1 thing\(s\)[^\n]*\n  - base model") as error:
        HubPreflightHooks().before_pipeline_run({}, pipe, catalog)
    assert str(error.value).count("\n  - ") == 1


def test_preflight_checks_only_what_the_pipeline_needs(offline_hub, monkeypatch, tmp_path):
    monkeypatch.delenv("MIFT_DATA_DIR", raising=False)
    datasets = {"carblacac/twitter-sentiment-analysis", f"tatsu-lab/alpaca (revision {ALPACA_SHA})"}
    llama2 = f"NousResearch/Llama-2-7b-chat-hf (revision {LLAMA2_SHA})"
    assert _repos(*_setup("llama2", "data_engineering")) == datasets
    assert _repos(*_setup("llama2", "training")) == {llama2}

    # reporting alone: the base model as the training run recorded it, and BERTScore's model
    monkeypatch.chdir(tmp_path)
    reporting = _setup("llama2", "reporting")
    benchmarks = {"allenai/ai2_arc", "Rowan/hellaswag", "cais/mmlu", "allenai/winogrande"}
    assert _repos(*reporting) == {"roberta-large", *benchmarks}  # no base model recorded yet: the node will say so
    record = tmp_path / "data" / "06_models" / "base_model_llama2"
    record.mkdir(parents=True)
    models.write_source(record, models.ModelSource("hub", "NousResearch/Llama-2-7b-chat-hf", revision=LLAMA2_SHA))
    assert _repos(*reporting) == {llama2, "roberta-large", *benchmarks}

    monkeypatch.setenv("MIFT_DATA_DIR", "/data")  # local raw data: no dataset from the Hub
    assert _repos(*_setup("llama2", "data_engineering")) == set()


def test_the_defaults_ask_nothing_of_the_hub(monkeypatch, shared_data):
    monkeypatch.setenv("MIFT_DATA_DIR", str(shared_data))
    def no_hub(*args, **kwargs):
        raise AssertionError("the Hub was asked")

    monkeypatch.setattr(HfApi, "repo_info", no_hub)
    pipe, catalog = _setup("local", *ALL)
    assert _repos(pipe, catalog) == set()
    HubPreflightHooks().before_pipeline_run({}, pipe, catalog)


@pytest.mark.slow
def test_kedro_run_llama2_offline_fails_before_the_first_node(kedro_project, offline_hub, monkeypatch):
    """Through Kedro: validation first (a bad parameter wins), then the preflight, then no node."""
    monkeypatch.delenv("MIFT_DATA_DIR", raising=False)
    bootstrap_project(kedro_project)
    with KedroSession.create(project_path=kedro_project, env="llama2") as session:
        with pytest.raises(HubUnreachableError, match=r"^8 thing\(s\)"):
            session.run()
    assert not (kedro_project / "data" / "02_intermediate").exists()

    params = kedro_project / "conf" / "llama2" / "parameters.yml"
    bad = yaml.safe_load(params.read_text())
    bad["variants"]["custom_only"]["mix"] = {"sentiment": 1.2}
    params.write_text(yaml.safe_dump(bad))
    with KedroSession.create(project_path=kedro_project, env="llama2") as session:
        with pytest.raises(ParameterError, match=r"must lie in \[0, 1\]"):
            session.run()


# --- a run whose inputs no earlier run saved ---------------------------------------------


def _registry() -> dict[str, Pipeline]:
    pipelines = {
        "data_engineering": data_engineering.create_pipeline(variants=VARIANTS),
        "training": training.create_pipeline(variants=VARIANTS),
        "reporting": reporting.create_pipeline(variants=VARIANTS),
    }
    return {**pipelines, "__default__": sum(pipelines.values(), Pipeline([]))}


def test_missing_inputs_name_the_pipeline_that_makes_them(kedro_project):
    """A fresh project: the training and reporting pipelines need what earlier pipelines make."""
    registry = _registry()
    _, catalog = _setup("local")
    training_needs = missing_inputs(registry["training"], catalog, registry)
    assert training_needs == {f"{v}.training_set": ["data_engineering"] for v in VARIANTS}
    assert missing_inputs_message(training_needs, list(registry)) == (
        "No earlier run saved both_instructions.training_set, custom_only.training_set, which the "
        "data_engineering pipeline makes: run `kedro run --pipelines data_engineering` first, "
        "or plain `kedro run`."
    )
    reporting_needs = missing_inputs(registry["reporting"], catalog, registry)
    assert reporting_needs["eval_sentiment"] == ["data_engineering"]
    assert reporting_needs["base_model"] == reporting_needs["custom_only.adapter"] == ["training"]
    assert "run `kedro run --env sweep --pipelines data_engineering,training` first, or plain " \
        "`kedro run --env sweep`." in missing_inputs_message(reporting_needs, list(registry), "sweep")
    assert missing_inputs(registry["__default__"], catalog, registry) == {}  # raw data: no maker

    # once made, nothing is missing (--namespaces: only that variant's inputs count)
    catalog.save("custom_only.training_set", pd.DataFrame({"prompt": [[]], "completion": [[]]}))
    only_custom = registry["training"].only_nodes_with_namespaces(["custom_only"])
    assert missing_inputs(only_custom, catalog, registry) == {"base_model": ["training"]}
    catalog.save("both_instructions.training_set", pd.DataFrame({"prompt": [[]], "completion": [[]]}))
    assert missing_inputs(registry["training"], catalog, registry) == {}


@pytest.mark.slow
def test_kedro_run_of_a_later_pipeline_first_says_what_to_run(kedro_project):
    """`kedro run --pipelines training` on a fresh clone: before the first node, one line
    naming the pipeline to run first, and no traceback."""
    import os
    import sys

    result = processes.run(
        [sys.executable, "-m", "kedro", "run", "--pipelines", "training"],
        cwd=kedro_project, env={**os.environ, "COLUMNS": "400"}, timeout=300,
    )
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert output.strip().splitlines()[-1] == (
        "Error: No earlier run saved both_instructions.training_set, custom_only.training_set, which "
        "the data_engineering pipeline makes: run `kedro run --pipelines data_engineering` first, "
        "or plain `kedro run`."
    )
    assert "Traceback" not in output
    assert not (kedro_project / "data" / "06_models").exists()  # no node ran
