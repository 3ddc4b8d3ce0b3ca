"""Project pipelines: one namespace per variant declared in parameters."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from mift_kedro import config
from mift_kedro.pipelines import data_engineering, reporting, training


def register_pipelines() -> dict[str, Pipeline]:
    """Build the pipelines for the variants of the active configuration environment."""
    variants = config.variant_names()
    pipelines = {
        "data_engineering": data_engineering.create_pipeline(variants=variants),
        "training": training.create_pipeline(variants=variants),
        "reporting": reporting.create_pipeline(variants=variants),
    }
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
