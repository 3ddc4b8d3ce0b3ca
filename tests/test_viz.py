"""kedro-viz serves the three pipelines, one namespace per variant, the layers, and renders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests import processes
from tests.conftest import copy_project

pytestmark = pytest.mark.slow  # a kedro-viz server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def viz_server(tmp_path_factory, shared_data):
    kedro_project = copy_project(tmp_path_factory.mktemp("viz") / "project")
    port = processes.free_port()
    log = (kedro_project / "viz.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "kedro", "viz", "run", "--no-browser", "--host", "127.0.0.1", "--port", str(port)],
        cwd=kedro_project, env={**os.environ, "MIFT_DATA_DIR": str(shared_data)}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    graph = json.loads(processes.wait_for_http(process, f"{url}/api/main", kedro_project / "viz.log", 120))
    yield url, graph
    processes.stop_group(process)  # the server runs in a multiprocessing child of `kedro viz run`


def test_viz_api_shows_pipelines_namespaces_and_layers(viz_server):
    _, graph = viz_server
    assert {"data_engineering", "training", "reporting", "__default__"} <= {p["id"] for p in graph["pipelines"]}
    assert {"custom_only", "both_instructions"} <= set(graph["modular_pipelines"])
    assert graph["layers"][:4] == ["raw", "intermediate", "primary", "model_input"]
    names = {n["name"] for n in graph["nodes"]}
    assert {"tweets_raw_train", "alpaca_raw_train", "custom_only.training_set", "eval_sentiment"} <= names


def test_flowchart_screenshot_is_not_blank(viz_server, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs the Debian packages chromium and chromium-driver")
        pytest.skip("chromium not installed (apt-get install chromium chromium-driver)")
    url, _ = viz_server
    shot = tmp_path / "flowchart.png"
    result = processes.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,900",
            "--virtual-time-budget=20000", f"--screenshot={shot}", url,
        ],
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1400, 900)
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, "the screenshot is (almost) a single colour"
    # The flowchart: node boxes and labels make a sizeable share of pixels differ from the background.
    background = max(colours)[0]
    assert background / (image.size[0] * image.size[1]) < 0.97
