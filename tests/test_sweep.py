"""The `sweep` environment: five Alpaca fractions as parameters, the pipelines unchanged."""

from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

SWEEP = {"alpaca_0": 0.0, "alpaca_25": 0.25, "alpaca_50": 0.5, "alpaca_75": 0.75, "alpaca_100": 1.0}


def test_sweep_env_resolves_to_five_namespaces(kedro_project):
    from kedro.framework.project import pipelines

    bootstrap_project(kedro_project)
    with KedroSession.create(project_path=kedro_project, env="sweep") as session:
        context = session.load_context()
        variants = context.params["variants"]
        assert {name: spec["mix"].get("alpaca", 0.0) for name, spec in variants.items()} == SWEEP
        assert len({spec["budget"] for spec in variants.values()}) == 1
        for name in ("data_engineering", "training"):
            namespaces = {n.namespace.split(".")[0] for n in pipelines[name].nodes if n.namespace}
            assert namespaces == set(SWEEP), name
    # Back in the default environment, the registry follows.
    with KedroSession.create(project_path=kedro_project) as session:
        session.load_context()
        namespaces = {n.namespace for n in pipelines["data_engineering"].nodes if n.namespace}
        assert namespaces == {"custom_only", "both_instructions"}
