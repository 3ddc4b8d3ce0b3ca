"""The training pipeline (importing it registers the `base_model` and `training` schemas)."""

from mift_kedro.pipelines.training import params  # noqa: F401  (registers parameter models)
from mift_kedro.pipelines.training.pipeline import create_pipeline

__all__ = ["create_pipeline"]
