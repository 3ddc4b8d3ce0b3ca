"""Experiment tracking with kedro-mlflow, on an embedded store, never at the expense of a run.

:class:`TrackingHooks` is kedro-mlflow's own hook (``conf/<env>/mlflow.yml``; one MLflow run per
``kedro run``; the parameters every node reads), registered by ``settings.py`` in place of the
plugin's auto-registered instance, with three additions:

* **results**: one nested run per model (``base`` and each variant, per training seed, tagged
  ``mift.model`` and ``mift.variant``, with ``training_seed`` among its parameters) holding the training
  loss per step and learning rate (MLflow metric history), tokens/s, wall time and the training
  parameters of ``<variant>.training_metrics``, and every metric of ``metrics`` per evaluation
  set with its CI bounds, Δ vs base, raw and Holm p; with several training seeds, each
  variant's mean, sd, min and max over them on the parent run (``seeds/<variant>/...``); the
  catalog datasets named under
  ``mift_kedro.artifacts`` in ``mlflow.yml`` become artifacts of the run (their files, laid
  out as under ``data/``). A hook rather than ``MlflowArtifactDataset`` wrappers in the catalog,
  because a failed upload must not fail the node that saved the file, and kedro-viz keeps
  its previews of the plain datasets.
* **a switch**: ``mift_kedro.enabled: false`` in ``mlflow.yml`` (or ``kedro run --params
  tracking.enabled=false``) leaves the store untouched.
* **no lost runs**: any tracking error (an unwritable store, a full disk) is logged as a
  warning, the MLflow run is closed as failed, and the Kedro run goes on without tracking;
  catalog outputs are saved as usual.

The store is an SQLite file in the project (``mlflow.yml``: ``server.mlflow_tracking_uri``, a
relative ``sqlite:///`` path being taken from the project root), so no server is needed;
``kedro mlflow ui`` serves it.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl
from kedro_mlflow.config.kedro_mlflow_config import KedroMlflowConfig
from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook
from mlflow.entities import Metric, Param, RunStatus
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from mift_kedro import config, runs
from mift_kedro.config import TrainedModel, trained_models

# Unless set otherwise: no usage telemetry (the project runs offline), and no background job
# runners in `kedro mlflow ui` (they serve MLflow's GenAI evaluations, unused here, and cost
# five processes).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")

logger = logging.getLogger(__name__)

#: The block of ``mlflow.yml`` this module reads; kedro-mlflow validates the rest.
PROJECT_KEY = "mift_kedro"
#: Datasets saved by hooks (not by nodes), logged as artifacts at the end of the run.
RUN_RECORDS = ("run_parameters", "pipeline_timings")
_MLFLOW_PATTERNS = ["mlflow*", "mlflow*/**", "**/mlflow*"]  # as kedro-mlflow registers them
_SQLITE = "sqlite:///"
_METRIC_KEYS = ("eval_set", "model", "display_name", "metric")
_NOT_LOGGED = {"higher_is_better", "n", "bootstrap_resamples"}
_NOT_TRAIN_METRICS = {"seed"}  # the training seed is a parameter of the model's run (training_seed)
_NOT_PARAMS = {"variant", "checkpoint_dir", "resumed_from"}  # the run's name; paths of this machine


class TrackingHooks(MlflowHook):
    """kedro-mlflow's ``MlflowHook``, guarded, plus per-model results and artifacts."""

    def __init__(self) -> None:
        super().__init__()
        self._active = False
        self._artifacts: list[str] = []
        self._catalog: Any = None
        self._parameters: dict[str, Any] = {}
        self._project_path = Path(".")
        self._save_version: str | None = None
        self._children: dict[str, str] = {}
        self._logged_params: dict[str, str] = {}

    # --- set-up: the project's keys, the switch, the store -----------------------------------

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._active = False
        self._project_path = Path(context.project_path)
        loader = context.config_loader
        loader.config_patterns.setdefault("mlflow", _MLFLOW_PATTERNS)
        try:
            conf = dict(loader["mlflow"])
        except MissingConfigException:
            conf = {}
        project = conf.pop(PROJECT_KEY, None) or {}
        server = dict(conf.get("server") or {})
        server["mlflow_tracking_uri"] = anchor_sqlite(server.get("mlflow_tracking_uri"), self._project_path)
        conf["server"] = server
        loader["mlflow"] = conf  # what kedro-mlflow reads next
        self._artifacts = [str(p) for p in project.get("artifacts") or []]
        if not _switched_on(project.get("enabled", True)):
            # `kedro mlflow ui` still finds the store; nothing is written to it
            context.__setattr__("mlflow", KedroMlflowConfig.model_validate(conf))
            logger.info("MLflow tracking is off (mlflow.yml: %s.enabled)", PROJECT_KEY)
            return
        if int(os.environ.get("RANK", "0")) > 0:
            return  # under `accelerate launch` only the main process tracks
        self._active = True
        with self._guard("setting up the store"):
            sqlite_file = _sqlite_path(server["mlflow_tracking_uri"])
            if sqlite_file is not None:
                sqlite_file.parent.mkdir(parents=True, exist_ok=True)
            super().after_context_created(context)

    @hook_impl
    def after_catalog_created(  # noqa: PLR0913
        self, catalog: Any, conf_catalog: dict, conf_creds: dict, parameters: dict, save_version: str,
        load_versions: dict,
    ) -> None:
        # `parameters` maps catalog names (`parameters`, `params:seed`, ...) to their values
        self._catalog, self._save_version = catalog, save_version
        self._parameters = (parameters or {}).get("parameters") or {}
        if self._active:
            with self._guard("reading the catalog"):
                super().after_catalog_created(catalog, conf_catalog, conf_creds, parameters, save_version, load_versions)

    # --- the run ----------------------------------------------------------------------------

    @hook_impl(trylast=True)  # after parameter validation: a run that cannot start is not tracked
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._children, self._logged_params = {}, {}
        if not self._active:
            return
        with self._guard("starting the MLflow run"):
            super().before_pipeline_run(run_params, pipeline, catalog)
            if self._tracking():
                names = "+".join(run_params.get("pipeline_names") or ["__default__"])
                mlflow.set_tags({
                    MLFLOW_RUN_NAME: f"{names} {self._save_version}",
                    "mift.save_version": self._save_version,  # the version of the run's catalog outputs
                    "mift.env": run_params.get("env") or "local",  # Kedro's default run env
                })

    @hook_impl
    def before_node_run(self, node: Any, catalog: Any, inputs: dict[str, Any], is_async: bool) -> None:
        if not self._active:
            return
        # the whole `parameters` dict is a node input of the report only; its parts are logged
        # under their own names by the nodes that read them
        params = {k: v for k, v in inputs.items() if k != "parameters"}
        with self._guard(f"logging the parameters of {node.name}"):
            super().before_node_run(node, catalog, params, is_async)

    def _log_param(self, name: str, value: Any) -> None:
        """Each parameter once per run (many nodes read the same block). Overrides the method
        through which ``MlflowHook.before_node_run`` logs every parameter: kedro-mlflow has no
        public setting for this, and tests/test_tracking.py fails if that method changes."""
        if self._logged_params.get(name) != str(value):
            super()._log_param(name, value)
            self._logged_params[name] = str(value)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        if not (self._active and self._tracking()):
            return
        with self._guard(f"logging {dataset_name}"):
            if dataset_name.endswith(".training_metrics"):
                self._log_training(dataset_name.rsplit(".", 1)[0], data)
            elif dataset_name in ("metrics", "benchmark_metrics"):  # benchmarks: <task>/acc, ...
                self._log_metrics(data)
            elif dataset_name == "seed_summary":
                self._log_seed_summary(data)
            self._log_artifact(dataset_name)

    @hook_impl(trylast=True)  # after the hooks that save the run's records
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if not self._active:
            return
        with self._guard("closing the MLflow run"):
            if self._tracking():
                for name in RUN_RECORDS:
                    self._log_artifact(name)
                self._log_timings()
                self._end_children(RunStatus.FINISHED)
            super().after_pipeline_run(run_params, pipeline, catalog)

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if not self._active:
            return
        with self._guard("closing the failed MLflow run"):
            self._end_children(RunStatus.FAILED)
            super().on_pipeline_error(error, run_params, pipeline, catalog)

    # --- what is logged ---------------------------------------------------------------------

    def _tracking(self) -> bool:
        """kedro-mlflow started a run for this pipeline and it is open (mlflow.yml may disable
        tracking for some pipelines: then it starts none)."""
        active = mlflow.active_run()
        return self.run_id is not None and active is not None and active.info.run_id == self.run_id

    def _child(self, model: str, display_name: str) -> str:
        """The nested run of one model (base or a variant), created on first use."""
        if model not in self._children:
            client = mlflow.MlflowClient()
            parent = client.get_run(self.run_id)
            run = client.create_run(
                parent.info.experiment_id,
                run_name=display_name,
                tags={MLFLOW_PARENT_RUN_ID: self.run_id, "mift.model": model,
                      "mift.save_version": str(self._save_version)},
            )
            self._children[model] = run.info.run_id
            trained = self._trained_models().get(model)
            if trained:  # what the variant is: its budget and mix (its training.* come with its record)
                spec = self._parameters.get("variants", {}).get(trained.variant) or {}
                setup = {k: v for k, v in spec.items() if k != "training"}
                axis = (self._parameters.get("reporting") or {}).get("forgetting_curve_axis") or "alpaca"
                setup[f"{axis}_fraction"] = (spec.get("mix") or {}).get(axis, 0.0)
                setup.update(variant=trained.variant, training_seed=trained.seed)
                client.set_tag(run.info.run_id, "mift.variant", trained.variant)
            else:
                setup = {"base_model": self._parameters.get("base_model")}
            _log_batch(run.info.run_id, params=_params(setup))
        return self._children[model]

    def _trained_models(self) -> dict[str, TrainedModel]:
        """The run's fine-tuned models by name: one per variant and training seed."""
        variants = self._parameters.get("variants") or {}
        return {m.name: m for m in trained_models(variants, config.training_seeds(self._parameters))}

    def _log_training(self, model: str, record: dict[str, Any]) -> None:
        """Loss and learning rate per step, and every number of the training record."""
        now = int(time.time() * 1000)
        metrics = []
        for row in record.get("loss_per_step") or []:
            for key in ("loss", "learning_rate"):
                if _number(row.get(key)):
                    metrics.append(Metric(f"train/{key}", float(row[key]), now, int(row["step"])))
        metrics += [
            Metric(f"train/{k}", float(v), now, 0)
            for k, v in record.items()
            if _number(v) and k not in _NOT_TRAIN_METRICS
        ]
        setup = {k: v for k, v in record.items() if isinstance(v, str | bool) and k not in _NOT_PARAMS}
        params = _params({"training": record.get("params") or {}, "setup": setup})
        _log_batch(self._child(model, str(record.get("variant", model))), metrics, params)

    def _log_metrics(self, frame: pd.DataFrame) -> None:
        """``<eval_set>/<metric>`` with its CI bounds, Δ vs base and p-values, per model."""
        now = int(time.time() * 1000)
        columns = [c for c in frame.columns if c not in _METRIC_KEYS and c not in _NOT_LOGGED]
        for model, rows in frame.groupby("model", sort=False):
            metrics = []
            for row in rows.to_dict("records"):
                key = f"{row['eval_set']}/{row['metric']}"
                metrics += [
                    Metric(key if column == "value" else f"{key}_{column}", float(row[column]), now, 0)
                    for column in columns
                    if _number(row[column])
                ]
            for eval_set, part in rows.groupby("eval_set"):
                metrics.append(Metric(f"{eval_set}/n", float(part["n"].iloc[0]), now, 0))
            _log_batch(self._child(str(model), str(rows["display_name"].iloc[0])), metrics)

    def _log_seed_summary(self, frame: pd.DataFrame) -> None:
        """Each variant's spread over its training seeds, on the parent run:
        ``seeds/<variant>/<eval_set>/<metric>_{mean,sd,min,max}`` (several seeds only)."""
        now = int(time.time() * 1000)
        metrics = [
            Metric(f"seeds/{row['variant']}/{row['eval_set']}/{row['metric']}_{stat}", float(row[stat]), now, 0)
            for row in frame.to_dict("records")
            if row["n_seeds"] > 1
            for stat in ("mean", "sd", "min", "max")
            if _number(row[stat])
        ]
        _log_batch(self.run_id, metrics)

    def _log_artifact(self, name: str) -> None:
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in self._artifacts):
            return
        path = runs.dataset_file(self._catalog, name, self._save_version, self._project_path)
        if path is None or not path.exists():
            return
        filepath = path.parent.parent if path.parent.name == self._save_version else path
        try:  # mirror data/: table_A.md under 08_reporting/tables
            folder = filepath.resolve().parent.relative_to((self._project_path / "data").resolve()).as_posix()
        except ValueError:
            folder = "other"
        mlflow.MlflowClient().log_artifact(self.run_id, str(path), artifact_path=folder)

    def _log_timings(self) -> None:
        """Seconds per pipeline on the parent run (the full record is an artifact)."""
        try:
            timings = self._catalog.load("pipeline_timings", version=self._save_version)
        except Exception:  # not saved by this run (e.g. another hook set-up)
            return
        now = int(time.time() * 1000)
        metrics = [Metric(f"time/{name}_s", float(s), now, 0) for name, s in timings.get("seconds", {}).items()]
        if _number(timings.get("pipeline_wall_s")):
            metrics.append(Metric("time/pipeline_wall_s", float(timings["pipeline_wall_s"]), now, 0))
        _log_batch(self.run_id, metrics)

    def _end_children(self, status: int) -> None:
        client = mlflow.MlflowClient()
        for run_id in self._children.values():
            client.set_terminated(run_id, RunStatus.to_string(status))
        self._children = {}

    # --- never at the expense of the run ----------------------------------------------------

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            logger.warning(
                "MLflow tracking failed while %s (%s: %s). The run goes on without tracking; "
                "its catalog outputs are saved as usual. (Tracking settings: conf/<env>/mlflow.yml.)",
                what, type(exc).__name__, exc,
            )
            self._active = False
            self._close_after_failure()

    def _close_after_failure(self) -> None:
        """Mark what was started as failed, as far as the store still answers."""
        for run_id in [*self._children.values(), self.run_id]:
            if run_id is None:
                continue
            try:
                mlflow.MlflowClient().set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            except Exception:  # the store is what failed
                pass
        while True:
            try:
                if mlflow.active_run() is None:
                    break
                mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
            except Exception:
                break
        self._children = {}


def anchor_sqlite(uri: str | None, project_path: Path) -> str | None:
    """A relative ``sqlite:///path`` taken from the project root, not the working directory."""
    if uri and uri.startswith(_SQLITE) and not uri.startswith(_SQLITE + "/"):
        return _SQLITE + str((project_path / uri[len(_SQLITE):]).resolve())
    return uri


def _sqlite_path(uri: str | None) -> Path | None:
    return Path(uri[len(_SQLITE):]) if uri and uri.startswith(_SQLITE) else None


def _switched_on(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in {"false", "no", "off", "0"}
    return bool(value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, as kedro-mlflow names a node's parameters."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _params(tree: dict[str, Any]) -> list[Param]:
    return [Param(key, str(value)[:6000]) for key, value in _flatten(tree).items() if value is not None]


def _log_batch(run_id: str, metrics: list[Metric] = (), params: list[Param] = ()) -> None:
    """MLflow takes at most 1000 metrics and 100 parameters per batch."""
    client = mlflow.MlflowClient()
    metrics, params = list(metrics), list(params)
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=params[start : start + 100])
