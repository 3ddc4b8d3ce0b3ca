"""Project settings: hooks and the config loader (https://docs.kedro.org/en/stable/configure/)."""

from mift_kedro.hooks import ParameterValidationHooks, ProjectConfigHooks

HOOKS = (ProjectConfigHooks(), ParameterValidationHooks())

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
