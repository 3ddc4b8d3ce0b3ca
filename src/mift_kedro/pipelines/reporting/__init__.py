"""The reporting pipeline (importing it registers the ``reporting`` parameter schema)."""

from mift_kedro.pipelines.reporting import params as _params  # noqa: F401  (registers schema)
from mift_kedro.pipelines.reporting.pipeline import create_pipeline

__all__ = ["create_pipeline"]
