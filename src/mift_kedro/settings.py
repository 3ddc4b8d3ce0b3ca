"""Project settings: hooks and the config loader (https://docs.kedro.org/en/stable/configure/)."""

from mift_kedro.hooks import (
    HubPreflightHooks,
    MainProcessSavesHooks,
    ParameterValidationHooks,
    PipelineTimingHooks,
    ProjectConfigHooks,
)
from mift_kedro.tracking import TrackingHooks

# MainProcessSavesHooks: under `accelerate launch`, only the main process writes artifacts.
# HubPreflightHooks runs after every other before_pipeline_run hook (trylast), so after
# the parameters are validated.
# TrackingHooks: kedro-mlflow's hook (conf/<env>/mlflow.yml) made failure-safe, with the
# project's results; it replaces the instance the plugin registers itself.
HOOKS = (
    ProjectConfigHooks(),
    ParameterValidationHooks(),
    HubPreflightHooks(),
    MainProcessSavesHooks(),
    PipelineTimingHooks(),
    TrackingHooks(),
)
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-mlflow", "kedro_mlflow")

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
