"""Project commands: Kedro's own ``run``, with the project's errors printed as one message.

An error a user can fix (a parameter, the Hub preflight, an input no earlier run saved, bad
data) is the project's own: ``kedro run`` (and ``python -m mift_kedro``, which ``accelerate
launch`` starts) prints its message and exits with status 1 instead of a traceback through
Kedro's runner and hooks. ``MIFT_TRACEBACK=1`` shows the traceback as before. Any other
exception (a bug, a library's error) keeps its traceback.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run
from kedro.io import DatasetError

from mift_kedro.config import ProjectError

#: Set to 1 to see the traceback of a project error.
TRACEBACK_VARIABLE = "MIFT_TRACEBACK"
PACKAGE = Path(__file__).resolve().parent
#: Plain errors the project's own code raises for bad input (those raised inside the package).
_OWN_TYPES = (ValueError, DatasetError, FileNotFoundError, RuntimeError)


def project_error(exc: BaseException) -> BaseException | None:
    """The project's own error in ``exc``'s chain (Kedro wraps a dataset's error in its own
    ``DatasetError``), or None when the exception is not one."""
    seen = set()
    chain = []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for error in reversed(chain):  # the innermost first: it says what is wrong
        if isinstance(error, ProjectError) or (type(error) in _OWN_TYPES and _raised_in_package(error)):
            return error
    return None


def _raised_in_package(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE)


def one_message(command: click.Command) -> click.Command:
    """A copy of ``command`` whose callback prints the project's errors as ``Error: <message>``."""
    command = copy.copy(command)
    callback = command.callback

    @functools.wraps(callback)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as exc:
            error = project_error(exc)
            if error is None or os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0"):
                raise
            raise click.ClickException(
                f"{error}\n(The traceback: run again with {TRACEBACK_VARIABLE}=1.)"
            ) from None

    command.callback = wrapped
    return command


@click.group(name="mift_kedro")
def cli() -> None:
    """Project commands (they replace Kedro's commands of the same name)."""


run = one_message(kedro_run)
cli.add_command(run)
