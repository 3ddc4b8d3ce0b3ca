"""`kedro run` as a user meets it: an error the user can fix is one message and status 1, no
traceback (MIFT_TRACEBACK=1 shows it); a run that cannot start saves nothing; a namespaced
training run prepares the base model it needs."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from mift_kedro import cli
from mift_kedro.config import DataError, ParameterError
from mift_kedro.datasets import read_jsonl
from mift_kedro.hooks import MissingInputsError
from tests import processes
from tests.conftest import PROJECT_ROOT
from tests.pipelines.training.test_training import sentiment_rows, tiny_model_dir  # noqa: F401

HINT = "(The traceback: run again with MIFT_TRACEBACK=1.)"


def _kedro_run(project: Path, *args: str, **env: str | None) -> tuple[int, list[str]]:
    """Exit status and output lines of `kedro run` in ``project``, with this checkout's code."""
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src"), "COLUMNS": "400"}
    for key, value in env.items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    result = processes.run([sys.executable, "-m", "kedro", "run", *args], cwd=project, env=environment, timeout=300)
    return result.returncode, (result.stdout + result.stderr).splitlines()


def _error(lines: list[str]) -> list[str]:
    """The message: from the line `Error: ...` to the end of the output."""
    starts = [i for i, line in enumerate(lines) if line.startswith("Error: ")]
    assert starts, "\n".join(lines[-40:])
    return lines[starts[-1]:]


@pytest.mark.slow
def test_offline_without_local_data_is_one_message_and_saves_nothing(kedro_project, tmp_path):
    status, lines = _kedro_run(kedro_project, "--pipelines", "data_engineering", MIFT_DATA_DIR=None,
                               HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), MIFT_TRACEBACK=None)
    error = _error(lines)
    assert status == 1 and not any("Traceback" in line for line in lines)
    assert error[0].startswith("Error: 2 thing(s) this run needs from the Hugging Face Hub")
    assert [line.split(":")[0] for line in error[1:3]] == [
        "  - raw dataset tatsu-lab/alpaca [alpaca_raw]",
        "  - raw dataset carblacac/twitter-sentiment-analysis [sentiment_raw]",
    ]
    assert error[3:] == [HINT]  # 4 lines in all
    assert not (kedro_project / "data" / "08_reporting").exists()  # no run_parameters of a run that never ran

    status, lines = _kedro_run(kedro_project, "--pipelines", "data_engineering", MIFT_DATA_DIR=None,
                               HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), MIFT_TRACEBACK="1")
    assert status == 1 and any("Traceback (most recent call last)" in line for line in lines)
    assert any("HubUnreachableError" in line for line in lines)


@pytest.mark.slow
def test_a_byte_that_is_not_utf8_is_one_message_naming_file_and_line(kedro_project, shared_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(shared_data / "twitter_sentiment", data / "twitter_sentiment")
    shutil.copytree(shared_data / "alpaca", data / "alpaca")
    train = data / "twitter_sentiment" / "train.jsonl"
    lines = train.read_bytes().splitlines(keepends=True)
    lines[6] = b'{"text": "caf\xe9 au lait", "feeling": 1}\n'  # Latin-1, not UTF-8
    train.write_bytes(b"".join(lines))

    status, output = _kedro_run(kedro_project, "--pipelines", "data_engineering", MIFT_DATA_DIR=str(data),
                                MIFT_TRACEBACK=None)
    assert status == 1 and not any("Traceback" in line for line in output)
    assert _error(output) == [
        f"Error: {train}:7: not UTF-8 (byte 0xe9 at column 14); save the file as UTF-8 or delete that line",
        HINT,
    ]


def test_decoding_errors_name_file_line_and_column(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(DataError, match=r"rows\.jsonl:2: not UTF-8 \(byte 0xff at column 8\)"):
        read_jsonl(path)
    path.write_bytes(b'{"a": 1}\r\n{"a": 2}\r\n')  # Windows line ends still read
    assert read_jsonl(path)["a"].tolist() == [1, 2]


def test_project_errors_are_found_inside_kedros_wrappers():
    """Kedro wraps a dataset's error in its own DatasetError: the project's message is found
    in the chain; an error raised outside the package (a bug, a library) is not one."""
    from kedro.io import DatasetError

    try:
        try:
            read_jsonl(Path("/nonexistent/rows.jsonl"))
        except FileNotFoundError as inner:
            raise DatasetError("Failed while loading data from dataset tweets") from inner
    except DatasetError as outer:
        assert str(cli.project_error(outer)) == "/nonexistent/rows.jsonl does not exist"
    assert cli.project_error(ValueError("a library's error")) is None
    assert cli.project_error(KeyError("x")) is None
    wrapped = RuntimeError("node failed")
    wrapped.__cause__ = ParameterError("training.lora.r must be positive")
    assert isinstance(cli.project_error(wrapped), ParameterError)
    assert issubclass(MissingInputsError, __import__("click").ClickException)  # printed by click itself


def test_kedro_run_and_python_m_mift_kedro_use_the_project_run_command():
    from kedro.framework.cli.utils import find_run_command

    assert find_run_command("mift_kedro") is cli.run
    assert cli.run.params == __import__("kedro.framework.cli.project", fromlist=["run"]).run.params


@pytest.mark.slow
def test_a_namespaced_training_run_prepares_the_base_model(kedro_project, tiny_model_dir):  # noqa: F811
    """`kedro run --pipelines training --namespaces custom_only`, as the README lists it, after
    data_engineering: the namespace filter leaves out prepare_base_model, which the run then
    runs itself; what an earlier pipeline makes is still named as missing."""
    bootstrap_project(kedro_project)
    runtime = {
        "base_model": {"source": "local", "name": str(tiny_model_dir)},
        "training": {"quantization": "none", "max_steps": 2, "effective_batch_size": 4, "batch_size": 4,
                     "max_length": 128, "save_steps": 100, "torch_threads": 1},
        "tracking": {"enabled": False},
    }
    base_model = kedro_project / "data" / "06_models" / "base_model"
    with KedroSession.create(project_path=kedro_project, runtime_params=runtime) as session:
        with pytest.raises(MissingInputsError, match=r"^No earlier run saved custom_only\.training_set, which the data_engineering"):
            session.run(pipeline_names=["training"], namespaces=["custom_only"])
    assert not base_model.exists()  # nothing prepared for a run that cannot start

    with KedroSession.create(project_path=kedro_project, runtime_params=runtime) as session:
        session.load_context().catalog.save("custom_only.training_set", sentiment_rows(8))
    with KedroSession.create(project_path=kedro_project, runtime_params=runtime) as session:
        session.run(pipeline_names=["training"], namespaces=["custom_only"])
    assert (base_model / "mift_model_source.json").is_file()
    assert len(list((kedro_project / "data" / "06_models" / "custom_only" / "adapter").iterdir())) == 1
    assert not (kedro_project / "data" / "06_models" / "both_instructions").exists()
