"""Every command the README and docs list, in the order written, on a fresh copy of the project
with tiny settings: `kedro run` and friends must succeed, and servers (kedro-viz, MLflow UI,
Jupyter) must answer on their HTTP port. A command that cannot run here (set-up, GPUs, the
full-size environments, the test suite itself) is listed in NOT_RUN with the reason, so a new
documented command is either run or explained.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import processes
from tests.conftest import PROJECT_ROOT, copy_project
from tests.test_end_to_end import _tiny_parameters

pytestmark = pytest.mark.slow

#: The pages whose commands are run, in reading order (the README first, then docs/index.md's).
PAGES = ["README.md", "docs/data_and_configuration.md", "docs/training.md", "docs/evaluation.md",
         "docs/results.md", "docs/sweep_and_seeds.md", "docs/gpus_and_llama2.md", "docs/benchmarks.md",
         "docs/tests.md", "docs/own_task.md", "docs/models.md"]
BLOCK = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.DOTALL | re.MULTILINE)

#: Commands not run here, by a pattern of the command, with the reason.
NOT_RUN = {
    r"^python3\.11 -m venv|^make install": "set-up: the tests run in the installed environment",
    r"^make test|^bash \.ci/run": "the test suite itself",
    r"--env llama2|bench_gpu\.py --out": "needs GPUs and the Hub (rehearsed on the CPU by tests/test_llama2_rehearsal.py)",
    r"^python benchmarks/bench_gpu\.py --tiny": "run by tests/test_bench_gpu.py",
    r"^accelerate launch .* --num_processes 2 +-m mift_kedro --pipelines training$":
        "two processes: tests/pipelines/training/test_training_accelerate.py",
    r"^kedro run --env questions": "the worked example's environment and files are the reader's own: the same "
                                   "configuration path is run by tests/test_own_task.py",
    r"HfApi\(\)\.dataset_info": "asks the Hugging Face Hub (offline here; tests/test_hub_datasets.py fakes it)",
    r"^kedro run --env (sweep|seeds)": "trains five or six models: the environments' pipelines are tested by "
                                       "tests/pipelines/reporting/test_sweep.py and tests/pipelines/reporting/test_seeds.py",
}
#: Servers: the command, the path that answers once it is up, and the options that pick a port.
SERVERS = {
    "kedro viz run": ("/api/main", ["--no-browser", "--host", "127.0.0.1", "--port", "{port}"]),
    "kedro mlflow ui": ("/health", ["--host", "127.0.0.1", "--port", "{port}"]),
    "mlflow ui": ("/health", ["--host", "127.0.0.1", "--port", "{port}"]),
    "kedro jupyter notebook": ("/api", ["--no-browser", "--ip=127.0.0.1", "--port={port}",
                                        *(["--allow-root"] if os.geteuid() == 0 else [])]),
}


def documented_commands(page: str) -> list[str]:
    """The shell commands of a page's bash blocks: continuation lines joined, comments dropped."""
    commands = []
    for block in BLOCK.findall((PROJECT_ROOT / page).read_text()):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"(^|\s+)#.*$", "", line).strip()
            if line:
                commands.append(line)
    return commands


def _reason_not_run(command: str) -> str | None:
    return next((reason for pattern, reason in NOT_RUN.items() if re.search(pattern, command)), None)


def _server(command: str) -> str | None:
    return next((name for name in SERVERS if command.startswith(name)), None)


def test_every_documented_command_is_run_or_explained():
    pages = {str(p.relative_to(PROJECT_ROOT)) for p in (PROJECT_ROOT / "docs").glob("*.md")} | {"README.md"}
    unlisted = [page for page in pages if documented_commands(page) and page not in PAGES]
    assert unlisted == [], f"add these pages to PAGES: {unlisted}"
    for page in PAGES:
        for command in documented_commands(page):
            runnable = command.startswith(("kedro ", "python -m mift_kedro")) or _server(command)
            assert runnable or _reason_not_run(command), f"{page}: run or explain `{command}` (NOT_RUN)"
    assert documented_commands("README.md")[2:6] == [
        "kedro run", "kedro run --pipelines data_engineering",
        "kedro run --pipelines training --namespaces custom_only", "kedro run --pipelines reporting",
    ]


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory):
    """The project as a clone has it (configuration, committed data, README and docs), with the
    tiny settings of the end-to-end test in conf/local."""
    project = copy_project(tmp_path_factory.mktemp("commands") / "project")
    shutil.copy(PROJECT_ROOT / "README.md", project / "README.md")
    shutil.copytree(PROJECT_ROOT / "docs", project / "docs")
    shutil.copytree(PROJECT_ROOT / "notebooks", project / "notebooks")
    (project / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(_tiny_parameters()))
    return project


def test_documented_commands_run_in_order(fresh_copy, shared_data, tmp_path):
    env = {**os.environ, "MIFT_DATA_DIR": str(shared_data), "PYTHONPATH": str(PROJECT_ROOT / "src"),
           "COLUMNS": "400", "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter_runtime"),
           "JUPYTER_DATA_DIR": str(tmp_path / "jupyter_data"), "BROWSER": "true"}
    ran = []
    for page in PAGES:
        for command in documented_commands(page):
            if _reason_not_run(command):
                continue
            server = _server(command)
            if server:
                _serve(command, server, fresh_copy, env, tmp_path)
            else:
                result = processes.run(shlex.split(command), cwd=fresh_copy, env=env, timeout=900)
                output = result.stdout[-3000:] + result.stderr[-3000:]
                assert result.returncode == 0, f"{page}: `{command}` failed:\n{output}"
            ran.append(command)
    assert ran[:4] == documented_commands("README.md")[2:6]
    # what the commands made: an adapter version per run that trained the variant (two full
    # runs, and custom_only alone with --namespaces)
    assert len(list((fresh_copy / "data/06_models/custom_only/adapter").iterdir())) == 3
    assert len(list((fresh_copy / "data/06_models/both_instructions/adapter").iterdir())) == 2
    assert (fresh_copy / "docs/results/demo/manifest.json").is_file()  # the export of the latest run


def _serve(command: str, server: str, project: Path, env: dict[str, str], tmp_path: Path) -> None:
    """Start a documented server on a free port, wait until it answers, stop it."""
    path, options = SERVERS[server]
    port = processes.free_port()
    args = shlex.split(command) + [option.format(port=port) for option in options]
    if args[0] == "kedro":
        args = [sys.executable, "-m", "kedro", *args[1:]]
    log_path = tmp_path / f"{server.replace(' ', '_')}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(args, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            processes.wait_for_http(process, f"http://127.0.0.1:{port}{path}", log_path, 240)
        finally:
            processes.stop_group(process)
