"""Kedro hooks: share the active config with the pipeline registry, validate parameters early."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

from mift_kedro import config

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
        params = catalog.load("parameters")
        config.validate_parameters(params)
        logger.info("Parameters validated for variants: %s", ", ".join(params.get("variants", {})))
