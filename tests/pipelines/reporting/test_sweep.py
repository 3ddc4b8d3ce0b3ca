"""The `sweep` environment: five Alpaca fractions as parameters, the pipelines unchanged; the
registry follows the environment of the session, in one process and on the command line."""

import os
import sys

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from tests import processes

SWEEP = {"alpaca_0": 0.0, "alpaca_25": 0.25, "alpaca_50": 0.5, "alpaca_75": 0.75, "alpaca_100": 1.0}
DEFAULT = {"custom_only", "both_instructions"}


def _variant_namespaces(pipeline) -> set[str]:
    return {n.namespace.split(".")[0] for n in pipeline.nodes if n.namespace}


@pytest.mark.slow
def test_sweep_env_resolves_to_five_namespaces(kedro_project):
    """sweep, default, sweep again in one process, as a notebook does with `%reload_kedro --env`:
    each session's registry has its environment's variants (Kedro's public
    ``pipelines.configure`` rebuilds it, :func:`mift_kedro.config.rebuild_pipelines`)."""
    from kedro.framework.project import pipelines

    bootstrap_project(kedro_project)
    with KedroSession.create(project_path=kedro_project, env="sweep") as session:
        context = session.load_context()
        variants = context.params["variants"]
        assert {name: spec["mix"].get("alpaca", 0.0) for name, spec in variants.items()} == SWEEP
        assert len({spec["budget"] for spec in variants.values()}) == 1
        for name in ("data_engineering", "training"):
            assert _variant_namespaces(pipelines[name]) == set(SWEEP), name
    # Back in the default environment, the registry follows.
    with KedroSession.create(project_path=kedro_project) as session:
        session.load_context()
        assert _variant_namespaces(pipelines["data_engineering"]) == DEFAULT
        assert _variant_namespaces(pipelines["training"]) == DEFAULT
    with KedroSession.create(project_path=kedro_project, env="sweep") as session:
        session.load_context()
        assert _variant_namespaces(pipelines["__default__"]) == set(SWEEP) | {"base"}


@pytest.mark.slow
def test_registry_on_the_command_line_follows_kedro_env(kedro_project):
    """`kedro registry describe` builds no session: the registry reads ``KEDRO_ENV``."""
    command = [sys.executable, "-m", "kedro", "registry", "describe", "data_engineering"]
    out = processes.run(command, timeout=180, env={**os.environ, "KEDRO_ENV": "sweep"})
    assert out.returncode == 0, out.stderr[-3000:]
    described = {line.strip(" -").split(".")[0] for line in out.stdout.splitlines() if "." in line}
    assert set(SWEEP) <= described and not DEFAULT & described
