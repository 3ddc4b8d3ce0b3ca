"""Warnings raised inside libraries about their own code, which this project cannot fix.

They are ignored by the module they are attributed to, so a run prints nothing a user must
learn to ignore, while the same warnings raised by mift_kedro's own code (or by a library
about a call mift_kedro makes) still show. ``settings.py`` applies them to every Kedro
command; the tests add them to pytest's ``filterwarnings`` (``tests/conftest.py``). Each
entry says where it comes from; drop it when the library is fixed. Library loggers that warn
about an optional speed-up this project does not use are raised to ERROR the same way.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings

#: (category, message regex, module regex) of each ignored warning.
IGNORED: tuple[tuple[type[Warning], str, str], ...] = (
    # kedro's OmegaConfigLoader and kedro-mlflow's hook register resolvers with the old OmegaConf call
    (UserWarning, r"register_new_resolver\(\) is deprecated", r"kedro(_mlflow)?\."),
    # mlflow, on kedro-mlflow's model class (untyped `predict`), when kedro-mlflow is imported
    # (mlflow raises it under its own "once" filter: see import_quietly)
    (UserWarning, r".*Add type hints to the `predict` method", r"mlflow\.pyfunc\.utils\.data_validation"),
    # transformers, when peft and its own Trainer use the old names (the project calls neither;
    # transformers attributes these to itself, whoever the caller)
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated", r"transformers\.modeling_utils"),
    (FutureWarning, r"`gradient_checkpointing_enable` is deprecated", r"transformers\.modeling_utils"),
    # torch, when a library defines a torch.jit.ScriptModule at import
    (DeprecationWarning, r"`torch\.jit\.script_method` is deprecated", r"torch\.jit\._script"),
    # kedro-mlflow's configuration models (pydantic v1-style `class Config`)
    (DeprecationWarning, r"Support for class-based `config` is deprecated", r"kedro_mlflow\."),
    # mlflow's SQLAlchemy store (sqlalchemy 2.1 deprecates `noload`)
    (DeprecationWarning, r"The ``noload`` loader strategy is deprecated", r"mlflow\.store\."),
)


#: Library loggers shown from ERROR up only.
QUIET_LOGGERS = (
    # bitsandbytes on a CPU with AVX512-BF16, without the optional `kernels` package (which
    # would fetch a kernel from the Hub): "Failed to load CPU gemm_4bit_forward ...", at import
    "bitsandbytes.backends.cpu.ops",
)


def ignore_library_warnings() -> None:
    """Install the filters (idempotent: ``warnings`` drops duplicates) and quiet the loggers."""
    for category, message, module in IGNORED:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def import_quietly(name: str) -> None:
    """Import module ``name`` so that the filters apply to its import-time warnings too.

    mlflow inspects each ``PythonModel`` subclass under ``catch_warnings`` with a "once" filter
    for ``UserWarning``, which takes precedence over any installed filter; importing the module
    that defines one (kedro-mlflow's) while recording warnings, then raising each recorded one
    again outside that context, lets the filters decide as for any other warning.
    """
    with warnings.catch_warnings(record=True) as caught:
        importlib.import_module(name)
    modules = {
        os.path.abspath(module.__file__): module_name
        for module_name, module in list(sys.modules.items())
        if getattr(module, "__file__", None)
    }
    for warning in caught:
        warnings.warn_explicit(
            warning.message, warning.category, warning.filename, warning.lineno,
            module=modules.get(os.path.abspath(warning.filename)),
        )


def pytest_filters() -> list[str]:
    """The same filters as pytest ``filterwarnings`` lines (``action:message:category:module``)."""
    return [
        f"ignore:{message}:{category.__module__}.{category.__qualname__}:{module}"
        for category, message, module in IGNORED
    ]
