"""Kedro hooks: share the active config with the pipeline registry, validate parameters early,
and keep each run's parameters and per-pipeline timings as versioned data next to its results."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import sys
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
    """Validates every parameter block before the first node runs, so a typo costs seconds, and
    saves them as ``run_parameters`` (versioned like the run's other outputs, so a run's
    results and the parameters that produced them share one version)."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        params = catalog.load("parameters")
        config.validate_parameters(params)
        logger.info("Parameters validated for variants: %s", ", ".join(params.get("variants", {})))
        catalog.save("run_parameters", params)


class PipelineTimingHooks:
    """Logs the wall time spent in each of the three pipelines at the end of a run, and saves it
    with each node's time as ``pipeline_timings`` (versioned JSON next to the reporting outputs).

    ``kedro run`` executes them as one ``__default__`` pipeline; the time of a node is
    attributed to the pipeline package its function comes from.
    """

    PIPELINES = ("data_engineering", "training", "reporting")

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._run_started = 0.0
        self._started_at = ""
        self.seconds: dict[str, float] = {}
        self.node_seconds: dict[str, float] = {}

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
        self.seconds, self.node_seconds = {}, {}
        self._run_started = time.perf_counter()
        self._started_at = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        start = self._started.pop(node.name, None)
        if start is not None:
            elapsed = time.perf_counter() - start
            name = self._pipeline_of(node)
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            self.node_seconds[node.name] = self.node_seconds.get(node.name, 0.0) + elapsed

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        summary = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.seconds.items())
        logger.info("Time per pipeline: %s (total %.0f s)", summary, sum(self.seconds.values()))
        if catalog is not None:
            catalog.save("pipeline_timings", self.record(run_params))

    def record(self, run_params: dict[str, Any]) -> dict[str, Any]:
        """The timings as data: seconds per pipeline and per node, the run and the machine."""
        return {
            "seconds": {name: round(s, 2) for name, s in self.seconds.items()},
            "total_node_s": round(sum(self.seconds.values()), 2),
            "pipeline_wall_s": round(time.perf_counter() - self._run_started, 2),
            "node_seconds": {name: round(s, 2) for name, s in self.node_seconds.items()},
            "started_at": self._started_at,
            "env": (run_params or {}).get("env"),
            "pipelines": (run_params or {}).get("pipeline_names"),
            "namespaces": (run_params or {}).get("namespaces"),
            "host": _host(),
        }


def _host() -> dict[str, Any]:
    """The machine the timings were taken on (the GPU only when torch is already loaded)."""
    host = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count()}
    torch = sys.modules.get("torch")
    if torch is not None:
        host["torch"] = torch.__version__
        host["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            host["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return host
