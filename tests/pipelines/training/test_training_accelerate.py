"""`accelerate launch --num_processes 2` runs the Kedro training pipeline with DDP on CPU:
both processes train, exactly one adapter version is written, it loads, and the two processes
take the same optimizer steps on the same sequences as one process does.

It launches with the reproduction's config (`conf/llama2/accelerate_multi_gpu.yaml`, DDP,
the process count on the command line). accelerate's `--cpu` mode starts several processes
only through MPI (`--mpirun_hostfile`); the multi-GPU launcher starts them with
torch.distributed.run, and without GPUs the pipeline makes them CPU ranks over gloo (see
mift_kedro.distributed)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from kedro.io import Version

from mift_kedro import models
from mift_kedro.datasets import AdapterDataset
from mift_kedro.pipelines.training import nodes
from tests import processes
from tests.conftest import PROJECT_ROOT
from tests.pipelines.training.test_training import sentiment_rows, tiny_model_dir  # noqa: F401  (fixture)

VERSION = "2026-01-01T00.00.00.000Z"
#: 16 examples, 8 per optimizer step: 2 steps, in micro-batches of 2 (2 accumulation steps on
#: each of 2 processes; 4 on one process). No warm-up, so step 1 updates the adapter.
OVERRIDES = {"effective_batch_size": 8, "batch_size": 2, "save_steps": 1, "warmup_ratio": 0.0,
             "learning_rate": 0.01}


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
        # the reproduction's launcher config, with the process count given on the command line
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(PROJECT_ROOT / "conf/llama2/accelerate_multi_gpu.yaml"),
        "--num_processes", "2", "--main_process_port", str(processes.free_port()),
        "-m", "mift_kedro", "--pipelines", "training", "--namespaces", "custom_only",
        "--params", ",".join(f"training.{key}={value}" for key, value in OVERRIDES.items()),
    ]
    result = processes.run(command, cwd=kedro_project, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    adapters = sorted((kedro_project / "data/06_models/custom_only/adapter").iterdir())
    metrics = sorted((kedro_project / "data/06_models/custom_only/training_metrics.json").iterdir())
    assert len(adapters) == 1 and len(metrics) == 1
    recorded = json.loads((metrics[0] / "training_metrics.json").read_text())
    assert recorded["num_processes"] == 2 and recorded["steps"] == 2
    assert (recorded["effective_batch_size"], recorded["per_process_batch_size"],
            recorded["gradient_accumulation_steps"]) == (8, 2, 2)

    # One process with the same parameters: same effective batch and steps, the same sequences
    # in each step (same tokens, same loss at step 1) and the same update (same loss at step 2)
    from kedro.config import OmegaConfigLoader

    params = OmegaConfigLoader(str(kedro_project / "conf"), base_env="base", default_run_env="local")["parameters"]
    _, single = nodes.train_adapter(
        str(base), sentiment_rows(16), params["variants"]["custom_only"],
        {**params["training"], **OVERRIDES}, seed=params["seed"],
    )
    assert single["num_processes"] == 1 and single["steps"] == recorded["steps"]
    assert (single["effective_batch_size"], single["per_process_batch_size"],
            single["gradient_accumulation_steps"]) == (8, 2, 4)
    assert [row["tokens_seen"] for row in single["loss_per_step"]] == [
        row["tokens_seen"] for row in recorded["loss_per_step"]
    ]
    assert [row["loss"] for row in single["loss_per_step"]] == pytest.approx(
        [row["loss"] for row in recorded["loss_per_step"]], rel=1e-5
    )
    model = AdapterDataset(
        filepath=str(kedro_project / "data/06_models/custom_only/adapter"), version=Version(None, None)
    ).load()
    assert not model.training
    assert Path(recorded["base_model"]) == base
