"""Experiment tracking (kedro-mlflow): it can be switched off by configuration, and a tracking
failure, at set-up or in the middle of a run, never costs the run its catalog outputs.

Each test runs the data_engineering pipeline (seconds); what a full run records in MLflow is
tested on the end-to-end fixture run (tests/test_end_to_end.py).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from mift_kedro import tracking
from tests import processes
from tests.conftest import copy_project

STORE = Path("data/09_tracking/mlflow.db")


def _kedro_run(project: Path, shared_data: Path, *args: str) -> subprocess.CompletedProcess:
    return processes.run(
        [sys.executable, "-m", "kedro", "run", "--pipelines", "data_engineering", *args],
        # wide enough that rich does not wrap a log message
        cwd=project, env={**os.environ, "MIFT_DATA_DIR": str(shared_data), "COLUMNS": "400"},
        timeout=600,
    )


def _assert_outputs_saved(project: Path) -> None:
    """The run's catalog outputs, including what hooks save, are on disk (one version each)."""
    for path in ("05_model_input/eval/sentiment.jsonl", "05_model_input/custom_only/training_set.jsonl",
                 "08_reporting/run_parameters.json", "08_reporting/pipeline_timings.json"):
        versions = list((project / "data" / path).iterdir())
        assert len(versions) == 1 and (versions[0] / Path(path).name).is_file(), path


@pytest.mark.slow
def test_an_unwritable_store_costs_the_run_nothing(tmp_path, shared_data):
    project = copy_project(tmp_path / "project")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory, so no store can be created below it (even as root)")
    store = {"server": {"mlflow_tracking_uri": f"sqlite:///{blocker}/mlflow.db"}}
    (project / "conf" / "local" / "mlflow.yml").write_text(yaml.safe_dump(store))
    result = _kedro_run(project, shared_data)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "MLflow tracking failed while setting up the store" in log
    assert "The run goes on without tracking" in log
    _assert_outputs_saved(project)


@pytest.mark.slow
def test_tracking_switched_off_leaves_the_store_untouched(tmp_path, shared_data):
    project = copy_project(tmp_path / "project")
    result = _kedro_run(project, shared_data, "--params", "tracking.enabled=false")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "MLflow tracking is off" in result.stdout + result.stderr
    assert not (project / STORE).exists()
    _assert_outputs_saved(project)


@pytest.mark.slow
def test_a_failure_mid_run_closes_the_mlflow_run_and_keeps_the_outputs(kedro_project, monkeypatch, caplog):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mlflow.MlflowClient, "log_artifact", full_disk)
    bootstrap_project(kedro_project)
    logger = logging.getLogger(tracking.__name__)
    logger.addHandler(caplog.handler)  # Kedro's logging set-up does not propagate to pytest's
    try:
        with KedroSession.create(project_path=kedro_project) as session:
            session.run(pipeline_names=["data_engineering"])
    finally:
        logger.removeHandler(caplog.handler)
    assert "MLflow tracking failed while logging" in caplog.text and "No space left on device" in caplog.text
    _assert_outputs_saved(kedro_project)
    client = mlflow.MlflowClient(f"sqlite:///{kedro_project / STORE}")
    (run,) = client.search_runs(client.get_experiment_by_name("mift_kedro").experiment_id)
    assert run.info.status == "FAILED"
    assert run.data.params["seed"] == "42"  # what was tracked before the failure is kept


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:///data/09_tracking/mlflow.db", "sqlite:////project/data/09_tracking/mlflow.db"),
        ("sqlite:////elsewhere/mlflow.db", "sqlite:////elsewhere/mlflow.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        (None, None),
    ],
)
def test_a_relative_sqlite_store_is_taken_from_the_project_root(uri, expected):
    assert tracking.anchor_sqlite(uri, Path("/project")) == expected


@pytest.mark.slow
def test_each_session_closes_its_run_so_the_next_one_gets_its_own(kedro_project):
    """Two `kedro run`s in one process (a notebook, the test suite): each ends with no MLflow
    run active, and each is its own MLflow run (kedro-mlflow re-opens the run before every node;
    with `tracking.run.nested: true` those re-opens stacked and one stayed active)."""
    bootstrap_project(kedro_project)
    for _ in range(2):
        with KedroSession.create(project_path=kedro_project) as session:
            session.run(pipeline_names=["data_engineering"])
        assert mlflow.active_run() is None
    client = mlflow.MlflowClient(f"sqlite:///{kedro_project / STORE}")
    runs = client.search_runs(client.get_experiment_by_name("mift_kedro").experiment_id)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}


# --- what the project relies on in kedro-mlflow and in Kedro's hook order ------------------


def test_parameters_are_logged_once_through_kedro_mlflows_node_hook(monkeypatch):
    """TrackingHooks overrides `_log_param`, the method through which kedro-mlflow's
    `MlflowHook.before_node_run` logs each parameter of a node: two nodes reading the same
    block log it once. Fails when kedro-mlflow renames or bypasses that method."""
    from kedro.pipeline import Node
    from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook

    logged = []
    monkeypatch.setattr(mlflow, "log_param", lambda name, value: logged.append((name, value)))
    hook = tracking.TrackingHooks()
    hook._is_mlflow_enabled, hook.run_id = True, None  # as kedro-mlflow leaves them for a tracked pipeline
    hook.flatten, hook.recursive, hook.sep = True, True, "."
    hook.long_params_strategy = "fail"
    node = Node(lambda *a: None, ["params:training", "params:seed"], None, name="n")
    inputs = {"params:training": {"lora": {"r": 16}}, "params:seed": 42}
    MlflowHook.before_node_run(hook, node, None, inputs, False)
    MlflowHook.before_node_run(hook, node, None, inputs, False)
    assert logged == [("training.lora.r", 16), ("seed", 42)]


def test_before_pipeline_run_hooks_run_in_the_order_the_checks_need():
    """Pluggy calls `before_pipeline_run` implementations in an order that settings.HOOKS
    sets: parameters validated, then the missing inputs named, then the Hub preflight, then
    run_parameters saved, and only then the MLflow run opened (a run that cannot start is
    neither tracked nor saves its parameters)."""
    import pluggy
    from kedro.framework.hooks import specs

    from mift_kedro import settings

    manager = pluggy.PluginManager("kedro")
    manager.add_hookspecs(specs.PipelineSpecs)
    for hook in settings.HOOKS:
        manager.register(hook)
    called = [type(impl.plugin).__name__ for impl in reversed(manager.hook.before_pipeline_run.get_hookimpls())]
    order = ["ParameterValidationHooks", "PipelineInputsHooks", "HubPreflightHooks", "RunParametersHooks",
             "TrackingHooks"]
    assert [name for name in called if name in order] == order


@pytest.mark.parametrize(("reporting", "expected"), [
    ({}, {"alpaca_fraction": "0.25"}),
    ({"forgetting_curve_axis": "sentiment"}, {"sentiment_fraction": "0.75"}),
])
def test_a_variants_run_logs_its_fraction_of_the_curves_axis_source(monkeypatch, reporting, expected):
    """Each variant's nested run carries its share of `reporting.forgetting_curve_axis`."""
    from types import SimpleNamespace

    logged: list[dict] = []

    class FakeClient:
        def get_run(self, run_id):
            return SimpleNamespace(info=SimpleNamespace(experiment_id="0"))

        def create_run(self, experiment_id, run_name=None, tags=None):
            return SimpleNamespace(info=SimpleNamespace(run_id="child"))

        def set_tag(self, *args):
            pass

    monkeypatch.setattr(mlflow, "MlflowClient", FakeClient)
    monkeypatch.setattr(tracking, "_log_batch", lambda run_id, params=None, **kw: logged.append(params))
    hook = tracking.TrackingHooks()
    hook.run_id = "parent"
    hook._parameters = {
        "seed": 42,
        "variants": {"mixed": {"display_name": "FT-Mixed", "budget": 8, "mix": {"sentiment": 0.75, "alpaca": 0.25}}},
        "reporting": reporting,
    }
    hook._child("mixed", "FT-Mixed")
    (params,) = logged
    assert {p.key: p.value for p in params if p.key.endswith("_fraction")} == expected
