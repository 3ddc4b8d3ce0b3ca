"""Kedro hooks: share the active config with the pipeline registry, validate parameters and
check what the run needs from the Hugging Face Hub before the first node, let only the main
process of an ``accelerate launch`` write artifacts, and keep each run's parameters and
per-pipeline timings as versioned data next to its results."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import sys
import time
from typing import Any

import click
from kedro.framework.hooks import hook_impl

from mift_kedro import config, hub
from mift_kedro.distributed import distributed_state, is_distributed

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
        from mift_kedro.parameters import validate_parameters  # the pipelines' schemas, only now

        params = catalog.load("parameters")
        validate_parameters(params)
        if scores_benchmarks(pipeline):  # task names and local files (lm-eval's index, ~6 s)
            from mift_kedro.pipelines.reporting import benchmark
            from mift_kedro.pipelines.reporting.params import reporting_params

            benchmark.task_specs(reporting_params(params["reporting"]).benchmarks, benchmark.data_dir())
        logger.info(
            "Parameters validated for variants: %s; training seeds: %s",
            ", ".join(params.get("variants", {})), ", ".join(map(str, config.training_seeds(params))),
        )


class RunParametersHooks:
    """Saves the run's parameters as ``run_parameters`` (versioned like the run's other outputs,
    so a run's results and the parameters that produced them share one version) once every
    check has passed: a run that cannot start saves nothing."""

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        catalog.save("run_parameters", catalog.load("parameters"))


def scores_benchmarks(pipeline: Any) -> bool:
    """The pipeline runs the reporting benchmark nodes (lm-evaluation-harness)."""
    return pipeline is not None and any(n.name.rsplit(".", 1)[-1] == "score_benchmarks" for n in pipeline.nodes)


class MissingInputsError(click.ClickException):
    """The run reads datasets that no earlier run saved; the message names the pipeline to run.

    A ``click`` exception, so ``kedro run`` prints it as one line (``Error: ...``) and exits
    with status 1, without a traceback; elsewhere (a notebook, a test) it is an ordinary error.
    """


class PipelineInputsHooks:
    """Before the first node, checks that the persisted datasets this run reads but does not
    make exist, and says in one line which pipeline makes the missing ones. On a fresh clone,
    ``kedro run --pipelines training`` would otherwise stop at its first node with Kedro's
    "Did not find any versions for ...training_set.jsonl".

    Only inputs that a registered pipeline outputs are checked: raw data has no pipeline to
    name, and its datasets' own errors say what to do.
    """

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        from kedro.framework.project import pipelines

        run_params = run_params or {}
        missing = missing_inputs(pipeline, catalog, pipelines)
        shared = []
        if missing and run_params.get("namespaces"):
            selected = [pipelines[name] for name in (run_params.get("pipeline_names") or ["__default__"])]
            shared = shared_nodes(missing, selected)
            made = {output for node in shared for output in node.outputs}
            missing = {name: makers for name, makers in missing.items() if name not in made}
        if missing:
            raise MissingInputsError(missing_inputs_message(missing, list(pipelines), run_params.get("env")))
        if shared:
            run_shared_nodes(shared, catalog)


def missing_inputs(pipeline: Any, catalog: Any, registry: Any) -> dict[str, list[str]]:
    """The free inputs of ``pipeline`` that a pipeline of ``registry`` makes but that are not
    saved in ``catalog``, each with the registered pipelines that make it (in registry order;
    ``__default__`` only when no named pipeline does)."""
    from kedro.io import MemoryDataset

    outputs = {name: registry[name].all_outputs() for name in registry}
    missing = {}
    for name in sorted(pipeline.inputs()):
        makers = [p for p, made in outputs.items() if name in made]
        makers = [p for p in makers if p != "__default__"] or makers
        if not makers:
            continue
        dataset = catalog.get(name)
        if dataset is None or isinstance(dataset, MemoryDataset) or catalog.exists(name):
            continue
        missing[name] = makers
    return missing


def shared_nodes(missing: dict[str, list[str]], selected: list[Any]) -> list[Any]:
    """The nodes outside every namespace, in the pipelines a ``--namespaces`` run selected, that
    make one of its missing inputs from parameters alone: ``prepare_base_model`` for ``kedro
    run --pipelines training --namespaces custom_only``. The namespace filter leaves them out,
    yet the run needs what they make."""
    return [
        node for pipe in selected for node in pipe.nodes
        if not node.namespace and set(node.outputs) & set(missing)
        and all(name.startswith("params:") or name == "parameters" for name in node.inputs)
    ]


def run_shared_nodes(nodes: list[Any], catalog: Any) -> None:
    """Run ``nodes`` (see :func:`shared_nodes`) before the pipeline, saving their outputs."""
    from kedro.pipeline import Pipeline
    from kedro.runner import SequentialRunner

    logger.info("Running %s first: the namespace filter left out what makes %s",
                ", ".join(node.name for node in nodes), ", ".join(o for n in nodes for o in n.outputs))
    SequentialRunner().run(Pipeline(nodes), catalog)
    if is_distributed():
        distributed_state().wait_for_everyone()  # the main process has written them


def missing_inputs_message(missing: dict[str, list[str]], order: list[str], env: str | None = None) -> str:
    """One line: what is missing, and the command that makes it (pipelines in ``order``)."""
    makers = [p for p in order if any(p in names for names in missing.values())]
    names = sorted(missing)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    run = f"kedro run --env {env}" if env else "kedro run"
    if makers == ["__default__"]:
        return f"No earlier run saved {shown}: run plain `{run}`."
    return (
        f"No earlier run saved {shown}, which the {' and '.join(makers)} pipeline"
        f"{'s make' if len(makers) > 1 else ' makes'}: run `{run} --pipelines {','.join(makers)}` "
        f"first, or plain `{run}`."
    )


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
        params = catalog.load("parameters")
        requirements = hub_requirements(pipeline, catalog, params)
        if not requirements:
            check_base_model(pipeline, params)
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
        check_base_model(pipeline, params)


def check_base_model(pipeline: Any, params: dict[str, Any]) -> None:
    """The base model this run prepares is a causal LM with a chat template (or one configured)."""
    from mift_kedro import models
    from mift_kedro.pipelines.training.params import base_model_params

    if "params:base_model" in pipeline.all_inputs():
        models.check_supported(base_model_params(params["base_model"]).model_source())


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

    if "reporting" in params and scores_benchmarks(pipeline):
        from mift_kedro.pipelines.reporting import benchmark

        cfg = reporting_params(params["reporting"]).benchmarks
        for task, repos in benchmark.hub_datasets(cfg, benchmark.data_dir()).items():
            for path, revision in sorted(repos, key=str):
                repo = hub.HubRepo(path, "dataset", revision)
                need(
                    repo, "benchmark dataset",
                    f"pre-download it where the Hub is reachable (`{repo.download_command()}`), "
                    f"or set {benchmark.DATA_DIR_ENV} and give the task local ai2_arc-schema files "
                    f"(`reporting.benchmarks.tasks.{task}.local_dir`)",
                    None, f"reporting.benchmarks.tasks.{task}",
                )
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
    from mift_kedro.threads import cpu_model

    host = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_model(),
            "cpu_count": os.cpu_count()}
    torch = sys.modules.get("torch")
    if torch is not None:
        host["torch"] = torch.__version__
        host["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            host["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return host


def _is_memory(catalog: Any, name: str) -> bool:
    from kedro.io import MemoryDataset

    try:
        return isinstance(catalog[name], MemoryDataset)
    except Exception:  # not registered yet: the runner makes it a MemoryDataset
        return True


class MainProcessSavesHooks:
    """Under ``accelerate launch``, only the main process writes persisted catalog datasets.

    Every process runs the same nodes (DDP needs every rank in the training step), but an
    artifact must be written once: on the other processes saves of persisted datasets are
    no-ops, and after each such save every process waits until the main one has written it
    (so a later node on any rank can load it). In-memory datasets stay per process.
    """

    def __init__(self) -> None:
        self._state = None
        self._catalog = None

    @hook_impl
    def after_catalog_created(self, catalog: Any) -> None:
        if not is_distributed():
            return
        self._state, self._catalog = distributed_state(), catalog
        if self._state.is_main_process:
            return
        save = catalog.save

        def save_on_main_only(name: str, data: Any) -> None:
            if _is_memory(catalog, name):
                save(name, data)

        catalog.save = save_on_main_only

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        if self._state is not None and not _is_memory(self._catalog, dataset_name):
            self._state.wait_for_everyone()
