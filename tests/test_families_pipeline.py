"""`kedro run` end to end (data_engineering, training, reporting) with a base model of another
family than Llama, chosen by the base_model parameters alone: Qwen2.5 (byte-level BPE, native
system turn) and Gemma-2 (SentencePiece, no system role: merged into the user turn; sliding
window and soft-capping), each a tiny random stand-in (tests/families.py), QLoRA on the CPU."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests import processes
from tests.conftest import PROJECT_ROOT, copy_project
from tests.families import FAMILIES, build

pytestmark = pytest.mark.slow

SYSTEM = "Reply with one word: positive or negative."


def _parameters(model_dir: Path, bertscore_dir: Path) -> dict:
    """The project's own parameters with the family's base model, a system prompt, tiny sizes."""
    from kedro.config import OmegaConfigLoader

    params = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local")["parameters"]
    params["base_model"] = {"source": "local", "name": str(model_dir)}
    params["sources"]["sentiment"]["system"] = SYSTEM
    for spec in params["variants"].values():
        spec["budget"] = 4
    for name, size in (("sentiment", 4), ("out_of_sample", None), ("alpaca", 2)):
        params["eval_sets"][name]["size"] = size
    params["training"].update({"quantization": "4bit", "max_steps": 1, "effective_batch_size": 4, "batch_size": 4,
                               "save_steps": 100})
    params["reporting"].update({"limit": 2, "max_new_tokens": {"sentiment": 3, "out_of_sample": 4, "alpaca": 4}})
    params["reporting"]["bootstrap"]["resamples"] = 20
    params["reporting"]["benchmarks"]["limit"] = 2
    params["reporting"]["bertscore"].update({"model_type": str(bertscore_dir), "num_layers": 2})
    return params


def _latest(path: Path) -> Path:
    (version,) = sorted(p for p in path.iterdir() if p.is_dir())
    return version / path.name


@pytest.mark.parametrize("name", ["qwen2_5", "gemma2"])
def test_kedro_run_with_another_family_by_the_base_model_parameter(name, tmp_path, shared_data, tiny_roberta_dir):
    spec = FAMILIES[name]
    model_dir = build(spec, shared_data, tmp_path / name)
    project = copy_project(tmp_path / "project")
    (project / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(_parameters(model_dir, tiny_roberta_dir)))
    result = processes.run(
        [sys.executable, "-m", "kedro", "run"], cwd=project,
        env={**os.environ, "MIFT_DATA_DIR": str(shared_data), "COLUMNS": "400", "OMP_NUM_THREADS": "1",
             "PYTHONPATH": str(PROJECT_ROOT / "src")}, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]

    predictions = pd.concat(
        pd.read_json(_latest(project / "data/07_model_output" / model / "predictions.jsonl"), lines=True)
        for model in ("base", "custom_only", "both_instructions")
    )
    sentiment = predictions[predictions["eval_set"] == "sentiment"]
    assert set(sentiment["model"]) == {"base", "custom_only", "both_instructions"}
    for text in sentiment["prompt_text"]:  # the family's own format, the system prompt as it takes one
        assert text.endswith(spec.prompt_end)
        assert (SYSTEM + "\n\nClassify" in text) == (spec.system == "merged") and SYSTEM in text
    assert (predictions["completion_tokens"] <= 4).all()
    metrics = json.loads(_latest(project / "data/06_models/custom_only/training_metrics.json").read_text())
    assert metrics["quantization"] == "4bit" and metrics["steps"] == 1
    scores = pd.read_csv(_latest(project / "data/08_reporting/metrics.csv"))
    assert {"accuracy", "answer_words"} <= set(scores.loc[scores["eval_set"] == "sentiment", "metric"])
