"""Kedro hooks: share the active config with the pipeline registry, validate parameters and
check what the run needs from the Hugging Face Hub, before the first node."""

from __future__ import annotations

import logging
import time
from typing import Any

from kedro.framework.hooks import hook_impl

from mift_kedro import config, hub

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


class HubPreflightHooks:
    """Before the first node, checks that everything this run will need from the Hugging Face
    Hub is in its cache or downloadable now, and fails with ONE error that lists each missing
    thing and its fix, instead of failing at the first node (or the last) that needs it.

    Only what the pipeline being run needs is checked: the base model when it is prepared
    here (``params:base_model``) or read from its record; the raw datasets it loads
    (when ``MIFT_DATA_DIR`` is unset); the BERTScore model when it scores predictions with a
    Hub model. The defaults (embedded model, local data, embedded BERTScore model) ask
    nothing of the Hub. Runs last among ``before_pipeline_run`` hooks, so after validation.
    """

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        start = time.perf_counter()
        requirements = hub_requirements(pipeline, catalog, catalog.load("parameters"))
        if not requirements:
            return
        unpinned = [f"{r.repo} ({r.pin})" for r in requirements if r.pin and not r.repo.revision]
        if unpinned:
            logger.warning(
                "Not pinned to a revision, so the Hub's latest is loaded and results may change "
                "with it: %s. Pin a commit SHA in that setting.", ", ".join(unpinned),
            )
        problems = hub.missing(requirements)
        seconds = time.perf_counter() - start
        if problems:
            lines = [
                f"{len(problems)} thing(s) this run needs from the Hugging Face Hub are neither "
                f"in its cache nor downloadable now (checked in {seconds:.1f} s):"
            ]
            lines += [
                f"  - {req.what} {req.repo} [{', '.join(req.users)}]: {problem}. Fix: {req.fix}"
                for req, problem in problems
            ]
            raise hub.HubUnreachableError("\n".join(lines))
        logger.info(
            "Hub preflight: %s cached or downloadable (%.1f s)",
            ", ".join(str(r.repo) for r in requirements), seconds,
        )


def hub_requirements(pipeline: Any, catalog: Any, params: dict[str, Any]) -> list[hub.Requirement]:
    """What ``pipeline`` will load from the Hub with these parameters and this catalog."""
    from pathlib import Path

    from mift_kedro import models
    from mift_kedro.datasets.raw import OFFLINE_FIX, HubOrLocalDataset
    from mift_kedro.pipelines.reporting.nodes import score_predictions
    from mift_kedro.pipelines.reporting.params import reporting_params
    from mift_kedro.pipelines.training.params import base_model_params

    found: dict[hub.HubRepo, hub.Requirement] = {}

    def need(repo: hub.HubRepo | None, what: str, fix: str, pin: str | None, user: str) -> None:
        if repo is not None:
            found.setdefault(repo, hub.Requirement(repo, what, fix, pin)).users.append(user)

    inputs = pipeline.all_inputs()
    # The base model: configured, when this run prepares it; else as recorded by an earlier run
    if "params:base_model" in inputs:
        source = base_model_params(params["base_model"]).model_source()
        user = "base_model"
    elif "base_model" in pipeline.inputs() and catalog.exists("base_model"):
        source = models.recorded_source(catalog.load("base_model"))
        user = "base_model (recorded)"
    else:
        source = None
    if source is not None and (repo := source.hub_repo()):
        fix = models.OFFLINE_HINT.format(command=repo.download_command())
        need(repo, "base model", fix, "base_model.revision", user)

    for name in sorted(pipeline.inputs()):
        dataset = catalog.get(name)
        if isinstance(dataset, HubOrLocalDataset):
            need(dataset.hub_repo(), "raw dataset", OFFLINE_FIX, "hub_revisions in conf/<env>/globals.yml", name)

    model_type = reporting_params(params["reporting"]).bertscore.model_type if "reporting" in params else None
    scores = any(node.func is score_predictions for node in pipeline.nodes)
    if scores and model_type and not Path(model_type).expanduser().exists():
        repo = hub.HubRepo(model_type)
        need(
            repo, "BERTScore model",
            f"pre-download it where the Hub is reachable (`{repo.download_command()}`), or set "
            "`reporting.bertscore.model_type: null` (the embedded all-MiniLM-L6-v2, offline)",
            None,  # bert-score loads the default branch
            "reporting.bertscore.model_type",
        )
    return list(found.values())


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
