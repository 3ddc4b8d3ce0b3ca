"""The whole experiment on tiny settings: `kedro run` end to end, then the analysis notebook.

One fixture run (real embedded model, real training, generation and metrics, a few examples
each) feeds every test here, so the suite pays for it once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests import processes
from tests.conftest import PROJECT_ROOT, copy_project

pytestmark = pytest.mark.slow


def _tiny_parameters() -> dict:
    """The project's own parameters, shrunk to a few examples and steps."""
    from kedro.config import OmegaConfigLoader

    params = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local")["parameters"]
    for spec in params["variants"].values():
        spec["budget"] = 8
    params["eval_sets"] = {"sentiment": {"size": 4, "table": "A"}, "out_of_sample": {"size": None, "table": "B"},
                           "alpaca": {"size": 2, "table": "C"}}
    params["training"].update({"max_steps": 2, "effective_batch_size": 4, "batch_size": 4, "save_steps": 100})
    params["reporting"].update({"limit": 3, "max_new_tokens": {"sentiment": 3, "out_of_sample": 8, "alpaca": 8}})
    params["reporting"]["bootstrap"]["resamples"] = 100
    params["reporting"]["benchmarks"]["limit"] = 4
    return params


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory, shared_data, embedded_base_model):
    project = copy_project(tmp_path_factory.mktemp("e2e") / "project")
    (project / "data" / "06_models").mkdir(parents=True)
    (project / "data" / "06_models" / "base_model").symlink_to(embedded_base_model)
    (project / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(_tiny_parameters()))
    result = processes.run(
        [sys.executable, "-m", "kedro", "run"],
        # wide enough that rich does not wrap a log message
        cwd=project, env={**os.environ, "MIFT_DATA_DIR": str(shared_data), "COLUMNS": "400"}, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    # nothing a user must learn to ignore: no Python warning at all (library_warnings.py)
    output = result.stdout + result.stderr
    assert re.findall(r".{0,200}\w*Warning: .{0,200}", output) == []
    return project


def _versions(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir())


def _latest(path: Path) -> Path:
    """The file of the single version of a versioned dataset at ``path``."""
    (version,) = _versions(path)
    return version / path.name


def test_kedro_run_writes_every_artifact_with_its_contents(fixture_run):
    """Every model on every evaluation set: predictions, metrics, a column in each table, a
    mention in the report."""
    import pandas as pd

    data = fixture_run / "data"
    params = _tiny_parameters()
    variants = list(params["variants"])
    models = ["base", *variants]
    eval_sets = {"sentiment": 3, "out_of_sample": 3, "alpaca": 2}  # reporting.limit 3, alpaca has 2
    for variant in variants:
        assert len(_versions(data / "06_models" / variant / "adapter")) == 1
    for model in models:
        predictions = pd.read_json(_latest(data / "07_model_output" / model / "predictions.jsonl"), lines=True)
        assert predictions.groupby("eval_set").size().to_dict() == eval_sets, model
        assert predictions["prediction"].str.strip().ne("").all(), model
        assert (predictions["completion_tokens"] > 0).all() and set(predictions["model"]) == {model}

    metrics = pd.read_csv(_latest(data / "08_reporting" / "metrics.csv"))
    assert set(metrics["model"]) == set(models)
    for model, part in metrics.groupby("model"):
        assert set(part["eval_set"]) == set(eval_sets), model
        assert {"accuracy", "macro_f1", "bertscore_f1", "rougeL"} <= set(part.loc[part["eval_set"] == "sentiment", "metric"])
        assert part["value"].notna().all(), model
    displays = metrics.drop_duplicates("model").set_index("model")["display_name"].to_dict()
    assert [displays[v] for v in variants] == [params["variants"][v]["display_name"] for v in variants]

    tables = data / "08_reporting" / "tables"
    for table, eval_set in (("table_A", "sentiment"), ("table_B", "out_of_sample"), ("table_C", "alpaca")):
        frame = pd.read_csv(_latest(tables / f"{table}.csv"))
        assert set(displays.values()) <= set(frame.columns), table
        assert frame[list(displays.values())].notna().all().all(), table
        header = _latest(tables / f"{table}.md").read_text()
        assert all(f"| {name} " in header for name in displays.values()), table
    for name in ("plots/sentiment.png", "study_comparison.csv", "study_comparison.md"):
        assert _latest(data / "08_reporting" / name).stat().st_size > 0, name

    report = _latest(data / "08_reporting" / "report.html").read_text()
    for title in ("Table A", "Table B", "Table C", *displays.values(),
                  "Against the reference study", "Base weights of every model (3 checked)"):
        assert title in report, title


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


# --- experiment tracking: what the fixture run recorded in MLflow, and the UI ----------------


def _mlflow_client(project: Path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{project / 'data' / '09_tracking' / 'mlflow.db'}")


def _tracked_runs(project: Path):
    """The fixture run's MLflow run and its nested runs by model."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    client = _mlflow_client(project)
    runs = client.search_runs([client.get_experiment_by_name("mift_kedro").experiment_id])
    (parent,) = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    children = {r.data.tags["mift.model"]: r for r in runs if r.data.tags.get(MLFLOW_PARENT_RUN_ID) == parent.info.run_id}
    return client, parent, children


def test_mlflow_tracks_parameters_training_and_every_metric(fixture_run, tmp_path):
    import json

    import pandas as pd

    client, parent, children = _tracked_runs(fixture_run)
    version = parent.data.tags["mift.save_version"]
    reporting = fixture_run / "data" / "08_reporting"
    assert [v.name for v in _versions(reporting / "metrics.csv")] == [version]
    assert parent.info.status == "FINISHED"
    # the parameters the nodes read, one MLflow parameter per leaf
    assert parent.data.params["training.max_steps"] == "2"
    assert parent.data.params["variants.custom_only.budget"] == "8"
    assert parent.data.params["reporting.bootstrap.resamples"] == "100"
    assert parent.data.metrics["time/training_s"] > 0 and parent.data.metrics["time/reporting_s"] > 0
    assert set(children) == {"base", "custom_only", "both_instructions"}
    assert children["both_instructions"].data.params["alpaca_fraction"] == "0.5"
    # one training seed (the default, `seed`): the model is the variant, trained at seed 42
    assert children["custom_only"].data.params["training_seed"] == "42"
    assert children["custom_only"].data.tags["mift.variant"] == "custom_only"
    # training: loss per step as a metric history, tokens/s, the training parameters
    for variant in ("custom_only", "both_instructions"):
        record = json.loads((fixture_run / "data/06_models" / variant / "training_metrics.json" / version / "training_metrics.json").read_text())
        run = children[variant]
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert [(m.step, m.value) for m in history] == [(r["step"], pytest.approx(r["loss"])) for r in record["loss_per_step"]]
        assert len(history) == 2
        assert run.data.metrics["train/tokens_per_s"] == pytest.approx(record["tokens_per_s"])
        assert run.data.params["training.lora.r"] == str(record["params"]["lora"]["r"])
    # reporting: every metric of every model and set, with its CI bounds and test
    metrics = pd.read_csv(reporting / "metrics.csv" / version / "metrics.csv")
    for row in metrics.itertuples():
        logged = children[row.model].data.metrics
        key = f"{row.eval_set}/{row.metric}"
        assert logged[key] == pytest.approx(row.value), key
        assert logged[f"{key}_ci_low"] == pytest.approx(row.ci_low) and logged[f"{key}_ci_high"] == pytest.approx(row.ci_high)
        if row.model != "base" and pd.notna(row.p_value_vs_base):  # answer_words is descriptive: no test
            assert logged[f"{key}_p_value_vs_base"] == pytest.approx(row.p_value_vs_base)
            assert logged[f"{key}_p_holm_vs_base"] == pytest.approx(row.p_holm_vs_base)
    # the report, tables and plots are artifacts, byte for byte
    for path in ("tables/table_A.md", "report.html", "plots/sentiment.png", "pipeline_timings.json"):
        local = client.download_artifacts(parent.info.run_id, f"08_reporting/{path}", str(tmp_path))
        name = Path(path).name
        assert Path(local).read_bytes() == (reporting / path / version / name).read_bytes(), path


@pytest.fixture
def mlflow_ui(fixture_run, tmp_path):
    """`kedro mlflow ui` on a free loopback port; stopped with all its children at the end."""
    port = processes.free_port()
    log = (tmp_path / "mlflow_ui.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "kedro", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port)],
        cwd=fixture_run, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    processes.wait_for_http(process, f"{url}/health", tmp_path / "mlflow_ui.log", 180)
    yield url
    processes.stop_group(process)
    with pytest.raises(ProcessLookupError):  # no process of the server's group is left
        os.killpg(process.pid, 0)


def test_mlflow_ui_lists_the_runs(fixture_run, mlflow_ui, tmp_path):
    """The runs page, in headless Chromium, lists the kedro run and, expanded, its nested runs.
    MIFT_MLFLOW_SCREENSHOT=docs/mlflow_ui.png keeps the screenshot (the README's)."""
    import json
    import shutil

    from tests.headless import CHROMIUM, Browser

    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs the Debian packages chromium and chromium-driver")
        pytest.skip("chromium not installed (apt-get install chromium chromium-driver)")
    _, parent, children = _tracked_runs(fixture_run)
    experiment = parent.info.experiment_id
    page = f"{mlflow_ui}/#/experiments/{experiment}/runs?workflowType=machine_learning"
    columns = {"sentiment/accuracy": 150, "sentiment/accuracy_ci_low": 200, "sentiment/accuracy_ci_high": 200,
               "sentiment/accuracy_p_holm_vs_base": 270, "train/tokens_per_s": 160}
    widths = {"attributes.`Run Name`": 200, "runDateAndNestInfo": 130, "duration": 90,
              **{f"metrics.`{c}`": w for c, w in columns.items()}}
    view = {  # the UI keeps its view settings in localStorage: classic runs view, a few metrics
        "mlflow.workflowType_v1": json.dumps("machine_learning"),
        "mlflow.assistant.panelOpen_v1": "false",
        "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
        f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment}"]-ReactComponentState': json.dumps(
            {"selectedColumns": [f"metrics.`{c}`" for c in columns], "columnOrder": list(widths), "columnWidths": widths}
        ),
    }
    shot = tmp_path / "mlflow_ui.png"
    (tmp_path / "chrome").mkdir()
    with Browser(tmp_path / "chrome", size=(1700, 640)) as browser:
        browser.goto(page)
        assert browser.wait_for(f"document.body.innerText.includes({json.dumps(parent.info.run_name)})", 90)
        browser.evaluate(";".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)})" for k, v in view.items()))
        browser.goto("about:blank")
        browser.goto(page)
        assert browser.wait_for(f"document.body.innerText.includes({json.dumps(parent.info.run_name)})", 90)
        # the nested runs of the kedro run: one per model
        browser.evaluate("document.querySelector('button[data-component-id*=\"runnamecellrenderer\"]').click()")
        names = [r.info.run_name for r in children.values()]
        assert browser.wait_for(" && ".join(f"document.body.innerText.includes({json.dumps(n)})" for n in names), 60)
        text = browser.evaluate("document.body.innerText")
        assert "4 matching runs" in text and "sentiment/accuracy" in text
        time.sleep(1)  # let the expanded rows paint
        browser.screenshot(shot)
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, "the screenshot is (almost) a single colour"
    if os.environ.get("MIFT_MLFLOW_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["MIFT_MLFLOW_SCREENSHOT"])


# --- results as data: export the fixture run, generate README blocks from it ---------------


def test_results_export_and_readme_blocks(fixture_run, tmp_path):
    import json

    from mift_kedro import results

    dest = tmp_path / "docs" / "results" / "fixture"
    command = [sys.executable, "-m", "mift_kedro.results"]
    done = processes.run([*command, "export", "latest", str(dest), "--project", str(fixture_run)], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (version,) = [v.name for v in _versions(fixture_run / "data" / "08_reporting" / "metrics.csv")]
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["version"] == version and manifest["missing"] == []
    for name in ("metrics.csv", "table_A.md", "table_C.csv", "confusion_sentiment.md", "plot_sentiment.png",
                 "forgetting_curve.csv", "forgetting_curve.md",
                 "run_parameters.json", "pipeline_timings.json", "training_metrics/custom_only.json",
                 "seed_summary.csv", "seed_summary.md"):
        assert name in manifest["files"], name
    reporting = fixture_run / "data" / "08_reporting"
    assert (dest / "metrics.csv").read_bytes() == (reporting / "metrics.csv" / version / "metrics.csv").read_bytes()
    assert (dest / "table_B.md").read_bytes() == (reporting / "tables/table_B.md" / version / "table_B.md").read_bytes()
    assert "p_holm_vs_base" in (dest / "metrics.csv").read_text().splitlines()[0]
    assert results.verify(dest) == []

    readme = tmp_path / "README.md"
    tables = [*results.TABLES, "table_A", "table_B", "table_C", "confusion_sentiment"]
    blocks = "".join(f"<!-- results:fixture:{t}:start -->\n<!-- results:fixture:{t}:end -->\n\n" for t in tables)
    readme.write_text("# Results\n\n" + blocks)
    render = [*command, "render-readme", "--readme", str(readme), "--results", str(dest.parent)]
    assert processes.run(render, timeout=120).returncode == 0
    text = readme.read_text()
    assert "| Accuracy |" in text and "FT-CustomOnly" in text and "| training |" in text and "Holm p" in text
    assert "**Confusion matrices" in text and "| true \\ answer |" in text
    assert processes.run([*render, "--check"], timeout=120).returncode == 0
    # a hand-edited cell: the check fails
    readme.write_text(text.replace("| Accuracy | ", "| Accuracy | 0.999 ", 1))
    check = processes.run([*render, "--check"], timeout=120)
    assert check.returncode == 1 and "disagrees" in check.stderr
    # a hand-edited result file: the manifest no longer matches
    (dest / "table_A.md").write_text((dest / "table_A.md").read_text().replace("Accuracy", "Acc."))
    assert results.verify(dest) == ["table_A.md"]
