"""Project settings: hooks and the config loader (https://docs.kedro.org/en/stable/configure/)."""

from mift_kedro.hooks import ParameterValidationHooks, PipelineTimingHooks, ProjectConfigHooks
from mift_kedro.pipelines.training.distributed import MainProcessSavesHooks

# MainProcessSavesHooks: under `accelerate launch`, only the main process writes artifacts.
HOOKS = (
    ProjectConfigHooks(),
    ParameterValidationHooks(),
    MainProcessSavesHooks(),
    PipelineTimingHooks(),
)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
