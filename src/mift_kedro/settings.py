"""Project settings: hooks and the config loader (https://docs.kedro.org/en/stable/configure/)."""

from mift_kedro.hooks import (
    HubPreflightHooks,
    ParameterValidationHooks,
    PipelineTimingHooks,
    ProjectConfigHooks,
)
from mift_kedro.pipelines.training.distributed import MainProcessSavesHooks

# MainProcessSavesHooks: under `accelerate launch`, only the main process writes artifacts.
# HubPreflightHooks runs after every other before_pipeline_run hook (trylast), so after
# the parameters are validated.
HOOKS = (
    ProjectConfigHooks(),
    ParameterValidationHooks(),
    HubPreflightHooks(),
    MainProcessSavesHooks(),
    PipelineTimingHooks(),
)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
