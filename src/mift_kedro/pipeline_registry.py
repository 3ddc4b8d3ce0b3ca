"""Project pipelines: one namespace per variant declared in parameters (data_engineering), and
one per variant and training seed (training, reporting)."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from mift_kedro import config
from mift_kedro.pipelines import data_engineering, reporting, training


def register_pipelines() -> dict[str, Pipeline]:
    """Build the pipelines for the variants and training seeds of the active environment."""
    variants = config.variant_names()
    seeds = config.active_training_seeds()
    pipelines = {
        "data_engineering": data_engineering.create_pipeline(variants=variants),
        "training": training.create_pipeline(variants=variants, seeds=seeds),
        "reporting": reporting.create_pipeline(variants=variants, seeds=seeds),
    }
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
