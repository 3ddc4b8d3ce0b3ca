"""Project settings: what loading them imports, and the library warnings a run does not print."""

from __future__ import annotations

import sys
import textwrap
import warnings

import pytest

from mift_kedro import library_warnings
from tests import processes


def test_loading_the_settings_imports_no_pipeline():
    code = "import sys, mift_kedro.settings; print(sorted(m for m in sys.modules if '.pipelines' in m))"
    out = processes.run([sys.executable, "-c", code], timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines()[-1] == "[]"


def _warn_from(module: str, message: str, category: type[Warning]) -> list[str]:
    """Raise ``message`` as if from ``module`` under only the project's filters; what is shown."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        library_warnings.ignore_library_warnings()
        warnings.warn_explicit(message, category, f"/x/{module.replace('.', '/')}.py", 1, module=module)
    return [str(w.message) for w in caught]


@pytest.mark.parametrize(("category", "message", "module"), [
    (UserWarning, "register_new_resolver() is deprecated and will be removed", "kedro.config.omegaconf_config"),
    (UserWarning, "register_new_resolver() is deprecated and will be removed", "kedro_mlflow.framework.hooks.mlflow_hook"),
    (FutureWarning, "`is_gradient_checkpointing` is deprecated and will be removed in v6.", "transformers.modeling_utils"),
    (FutureWarning, "`gradient_checkpointing_enable` is deprecated and will be removed in v6.", "transformers.modeling_utils"),
    (DeprecationWarning, "`torch.jit.script_method` is deprecated.", "torch.jit._script"),
])
def test_library_warnings_are_ignored_by_where_they_come_from(category, message, module):
    assert _warn_from(module, message, category) == []
    # the same warning raised by the project's own code still shows
    assert _warn_from("mift_kedro.pipelines.training.nodes", message, category) == [message]


def test_a_warning_raised_under_a_librarys_own_filter_is_ignored_too(tmp_path, monkeypatch):
    """mlflow's "once" filter for UserWarning would override the project's filters."""
    package = tmp_path / "mlflow_like"
    (package / "pyfunc" / "utils").mkdir(parents=True)
    for folder in (package, package / "pyfunc", package / "pyfunc" / "utils"):
        (folder / "__init__.py").write_text("")
    (package / "pyfunc" / "utils" / "data_validation.py").write_text(textwrap.dedent("""
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("once", category=UserWarning)
            warnings.warn("\\033[33mAdd type hints to the `predict` method ...", UserWarning)
        warnings.warn("a warning of its own", UserWarning)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(library_warnings, "IGNORED", (
        (UserWarning, r".*Add type hints to the `predict` method", r"mlflow_like\.pyfunc\.utils\.data_validation"),
    ))
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        library_warnings.ignore_library_warnings()
        library_warnings.import_quietly("mlflow_like.pyfunc.utils.data_validation")
    assert [str(w.message) for w in caught] == ["a warning of its own"]
