"""Templating of raw data into conversations, mixing per variant, evaluation sets."""

from mift_kedro.pipelines.data_engineering.pipeline import create_pipeline

__all__ = ["create_pipeline"]
