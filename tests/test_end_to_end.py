"""The whole experiment on tiny settings: `kedro run` end to end, then the analysis notebook.

One fixture run (real embedded model, real training, generation and metrics, a few examples
each) feeds every test here, so the suite pays for it once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT, copy_project

pytestmark = pytest.mark.slow


def _tiny_parameters() -> dict:
    """The project's own parameters, shrunk to a few examples and steps."""
    from kedro.config import OmegaConfigLoader

    params = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local")["parameters"]
    for spec in params["variants"].values():
        spec["budget"] = 8
    params["eval_sets"] = {"sentiment": {"size": 4}, "out_of_sample": {"size": None}, "alpaca": {"size": 2}}
    params["training"].update({"max_steps": 2, "effective_batch_size": 4, "batch_size": 4, "save_steps": 100})
    params["reporting"].update({"limit": 3, "max_new_tokens": {"sentiment": 3, "out_of_sample": 8, "alpaca": 8}})
    params["reporting"]["bootstrap"]["resamples"] = 100
    return params


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory, shared_data, embedded_base_model):
    project = copy_project(tmp_path_factory.mktemp("e2e") / "project")
    (project / "data" / "06_models").mkdir(parents=True)
    (project / "data" / "06_models" / "base_model").symlink_to(embedded_base_model)
    (project / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(_tiny_parameters()))
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run"],
        cwd=project, env={**os.environ, "MIFT_DATA_DIR": str(shared_data)},
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return project


def _versions(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir())


def test_kedro_run_writes_every_artifact(fixture_run):
    data = fixture_run / "data"
    for variant in ("custom_only", "both_instructions"):
        assert len(_versions(data / "06_models" / variant / "adapter")) == 1
        assert len(_versions(data / "07_model_output" / variant / "predictions.jsonl")) == 1
    assert len(_versions(data / "07_model_output" / "base" / "predictions.jsonl")) == 1
    for name in ("metrics.csv", "report.html", "tables/table_A.md", "tables/table_B.csv", "tables/table_C.csv",
                 "plots/sentiment.png", "study_comparison.csv", "study_comparison.md"):
        assert len(_versions(data / "08_reporting" / name)) == 1, name
    report = next((data / "08_reporting" / "report.html").rglob("report.html")).read_text()
    for title in ("Table A", "Table B", "Table C", "FT-CustomOnly", "FT-BothInstruction",
                  "Against the reference study", "Base weights of every model (3 checked)"):
        assert title in report


def test_analysis_notebook_runs(fixture_run):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(PROJECT_ROOT / "notebooks" / "analysis.ipynb", as_version=4)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(fixture_run)}}
    )
    client.execute()  # raises CellExecutionError naming the cell that failed
    outputs = "".join(
        out.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )
    assert "Table A" in outputs and "FT-CustomOnly" in outputs
