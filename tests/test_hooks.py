"""The per-pipeline timing hook attributes node time to the pipeline a node comes from and keeps
it as data; the validation hook keeps the run's parameters."""

import json
import logging

from kedro.io import DataCatalog
from kedro.pipeline import Node
from kedro_datasets.json import JSONDataset

from mift_kedro.hooks import ParameterValidationHooks, PipelineTimingHooks
from mift_kedro.pipelines.data_engineering import nodes as de_nodes
from mift_kedro.pipelines.training import nodes as training_nodes
from tests.conftest import PROJECT_ROOT


def test_time_is_summed_per_pipeline_and_saved(caplog, tmp_path):
    catalog = DataCatalog({"pipeline_timings": JSONDataset(filepath=str(tmp_path / "timings.json"))})
    hooks = PipelineTimingHooks()
    hooks.before_pipeline_run({}, None, catalog)
    clean = Node(de_nodes.clean_tweets, "a", "b", name="clean")
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
    assert saved["env"] == "local" and saved["pipelines"] == ["__default__"] and saved["host"]["cpu_count"] >= 1


def test_validated_parameters_are_saved_with_the_run(tmp_path):
    from kedro.config import OmegaConfigLoader

    params = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local")["parameters"]
    catalog = DataCatalog({"run_parameters": JSONDataset(filepath=str(tmp_path / "params.json"))})
    catalog["parameters"] = params
    ParameterValidationHooks().before_pipeline_run({}, None, catalog)
    assert catalog.load("run_parameters") == json.loads(json.dumps(params))
