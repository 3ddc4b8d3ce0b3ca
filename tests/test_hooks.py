"""The per-pipeline timing hook attributes node time to the pipeline a node comes from."""

import logging

from kedro.pipeline import Node

from mift_kedro.hooks import PipelineTimingHooks
from mift_kedro.pipelines.data_engineering import nodes as de_nodes
from mift_kedro.pipelines.training import nodes as training_nodes


def test_time_is_summed_per_pipeline(caplog):
    hooks = PipelineTimingHooks()
    hooks.before_pipeline_run({}, None, None)
    clean = Node(de_nodes.clean_tweets, "a", "b", name="clean")
    train = Node(training_nodes.train_adapter, ["c", "d", "e", "f", "g"], ["h", "i"], name="train")
    for node in (clean, train, clean):
        hooks.before_node_run(node)
        hooks.after_node_run(node)
    assert set(hooks.seconds) == {"data_engineering", "training"}
    with caplog.at_level(logging.INFO, logger="mift_kedro.hooks"):
        hooks.after_pipeline_run({}, None, None)
    assert "Time per pipeline: data_engineering" in caplog.text and "training" in caplog.text
