"""`accelerate launch --num_processes 2` runs the Kedro training pipeline with DDP on CPU:
both processes train, exactly one adapter version is written, and it loads.

accelerate's `--cpu` mode starts several processes only through MPI (`--mpirun_hostfile`);
`--multi_gpu` starts them with torch.distributed.run, and without GPUs the pipeline makes
them CPU ranks over gloo (see mift_kedro.pipelines.training.distributed)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from kedro.io import Version

from mift_kedro import models
from mift_kedro.datasets import AdapterDataset
from tests.test_training import sentiment_rows, tiny_model_dir  # noqa: F401  (fixture)

VERSION = "2026-01-01T00.00.00.000Z"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_accelerate_run_writes_one_adapter(kedro_project, tiny_model_dir):  # noqa: F811
    # The inputs the training namespace reads: a training set and a prepared base model
    set_dir = kedro_project / "data/05_model_input/custom_only/training_set.jsonl" / VERSION
    set_dir.mkdir(parents=True)
    sentiment_rows(16).to_json(set_dir / "training_set.jsonl", orient="records", lines=True)
    base = kedro_project / "data/06_models/base_model"
    shutil.copytree(tiny_model_dir, base)
    models.write_source(base, models.ModelSource(source="embedded", name=models.EMBEDDED_GGUF))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        "-m", "mift_kedro", "--pipeline", "training", "--namespaces", "custom_only",
        "--params", "training.max_steps=2,training.batch_size=2,training.save_steps=1",
    ]
    result = subprocess.run(
        command, cwd=kedro_project, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    adapters = sorted((kedro_project / "data/06_models/custom_only/adapter").iterdir())
    metrics = sorted((kedro_project / "data/06_models/custom_only/training_metrics.json").iterdir())
    assert len(adapters) == 1 and len(metrics) == 1
    recorded = json.loads((metrics[0] / "training_metrics.json").read_text())
    assert recorded["num_processes"] == 2 and recorded["steps"] == 2
    model = AdapterDataset(
        filepath=str(kedro_project / "data/06_models/custom_only/adapter"), version=Version(None, None)
    ).load()
    assert not model.training
    assert Path(recorded["base_model"]) == base
