"""Project settings: hooks and the config loader (https://docs.kedro.org/en/stable/configure/)."""

from mift_kedro.library_warnings import ignore_library_warnings, import_quietly

# Before anything below imports the libraries that raise them at import time
ignore_library_warnings()
import_quietly("kedro_mlflow.mlflow")

from mift_kedro.hooks import (  # noqa: E402
    HubPreflightHooks,
    MainProcessSavesHooks,
    ParameterValidationHooks,
    PipelineInputsHooks,
    PipelineTimingHooks,
    ProjectConfigHooks,
    RunParametersHooks,
)
from mift_kedro.tracking import TrackingHooks  # noqa: E402

# Order of the before_pipeline_run checks: pluggy calls hooks registered later first, so the
# parameters are validated, then PipelineInputsHooks names the pipeline that makes a missing
# input; HubPreflightHooks runs after every other one (trylast), but before TrackingHooks (also
# trylast: pluggy calls those in registration order), so a run that cannot start opens no MLflow
# run; RunParametersHooks (trylast, between them) saves run_parameters once every check passed.
# MainProcessSavesHooks: under `accelerate launch`, only the main process writes artifacts.
# TrackingHooks: kedro-mlflow's hook (conf/<env>/mlflow.yml) made failure-safe, with the
# project's results; it replaces the instance the plugin registers itself.
HOOKS = (
    ProjectConfigHooks(),
    PipelineInputsHooks(),
    ParameterValidationHooks(),
    HubPreflightHooks(),
    RunParametersHooks(),
    MainProcessSavesHooks(),
    PipelineTimingHooks(),
    TrackingHooks(),
)
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-mlflow", "kedro_mlflow")

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
