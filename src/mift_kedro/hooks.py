"""Kedro hooks: share the active config with the pipeline registry, validate parameters early."""

from __future__ import annotations

import logging
import time
from typing import Any

from kedro.framework.hooks import hook_impl

from mift_kedro import config

logger = logging.getLogger(__name__)


class ProjectConfigHooks:
    """Hands the session's config loader (with its ``--env``) to :mod:`mift_kedro.config`.

    The pipeline registry builds one namespace per declared variant, so it must read the
    parameters of the environment the session runs in, not only ``base``.
    """

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        config.set_active_config_loader(context.config_loader)


class ParameterValidationHooks:
    """Validates every parameter block before the first node runs, so a typo costs seconds."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        params = catalog.load("parameters")
        config.validate_parameters(params)
        logger.info("Parameters validated for variants: %s", ", ".join(params.get("variants", {})))


class PipelineTimingHooks:
    """Logs the wall time spent in each of the three pipelines, at the end of a run.

    ``kedro run`` executes them as one ``__default__`` pipeline; the time of a node is
    attributed to the pipeline package its function comes from.
    """

    PIPELINES = ("data_engineering", "training", "reporting")

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    @staticmethod
    def _pipeline_of(node: Any) -> str:
        module = getattr(getattr(node, "func", None), "__module__", "") or ""
        for name in PipelineTimingHooks.PIPELINES:
            if f".pipelines.{name}" in module:
                return name
        return "other"

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._started.clear()
        self.seconds = {}

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        start = self._started.pop(node.name, None)
        if start is not None:
            name = self._pipeline_of(node)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        summary = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.seconds.items())
        logger.info("Time per pipeline: %s (total %.0f s)", summary, sum(self.seconds.values()))
