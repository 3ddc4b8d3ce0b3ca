"""benchmarks/bench_gpu.py --tiny: the GPU benchmark's whole code path on a toy Llama on the CPU
(4-bit NF4 through bitsandbytes, the llama2 LoRA, training steps, generation), so it cannot rot
before a GPU runs it; and its committed token lengths are the templated llama2 data's."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from tests import processes
from tests.conftest import PROJECT_ROOT

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")]

SCRIPT = PROJECT_ROOT / "benchmarks/bench_gpu.py"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_gpu") / "gpu.json"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")}
    result = processes.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(out)], cwd=PROJECT_ROOT,
                           env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout  # one JSON line; progress goes to stderr
    return json.loads(lines[0]), json.loads(out.read_text()), result.stderr


def test_tiny_run_trains_and_generates_with_the_llama2_settings(tiny):
    line, _, _ = tiny
    settings = line["settings"]
    assert settings["quantization"] == "4bit"
    assert settings["bnb_4bit"]["quant_type"] == "nf4" and settings["bnb_4bit"]["use_double_quant"] == "True"
    assert settings["lora"]["r"] == 64 and settings["lora"]["alpha"] == 16
    assert settings["lora"]["target_modules"] == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    assert (settings["micro_batch_size"], settings["max_length"]) == (4, 512)  # conf/llama2
    assert settings["gradient_checkpointing"] is True
    assert settings["loop"].startswith("the training pipeline's trainer")
    assert settings["compute_dtype"] == "float32"  # the CPU's; bf16 autocast on a GPU

    training = line["training"]
    assert training["timed_steps"] == 2 and training["sequences"] == 2 * 2 * 4
    assert 0 < training["completion_tokens"] < training["tokens"]
    assert training["tokens_per_s"] > 0 and training["model_flops"] > 0
    assert 0 < training["mfu"] < 1
    assert math.isclose(training["mfu"], training["model_flops_per_s"] / line["matmul_peak"]["flops_per_s"])
    assert training["lora_parameters"] == 2 * 64 * (4 * (64 + 64) + 3 * (64 + 128))  # r=64 on 7 projections x 2 layers
    losses = training["losses"]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses) and len(set(losses)) > 1
    assert training["peak_memory_bytes"] is None  # CPU

    generation = line["generation"]
    assert generation["how"].startswith("the reporting pipeline's decode loop (generation.generate_ids)")
    for model in ("base", "adapter"):
        assert generation[model]["new_tokens"] == generation["batch_size"] * generation["max_new_tokens"]
        assert generation[model]["tokens_per_s"] > 0
    assert set(line["phases_s"]) >= {"random_init_and_save", "load_4bit", "training", "generation_adapter"}
    assert line["device"] == "cpu" and line["lengths"]["variant"] == "both_instructions"


def test_out_file_is_the_line_with_its_provenance(tiny):
    line, record, stderr = tiny
    assert record["command"].startswith("python benchmarks/bench_gpu.py --tiny --out ")
    assert {k: v for k, v in record.items() if k not in ("date", "command")} == line
    assert "bench_gpu: 100%" in stderr and "3/3" in stderr  # the pipeline's progress bar: 1 + 2 steps
    assert f"tokenized with {line['lengths']['tokenizer']}" in stderr  # which tokenizer, Llama-2's or a stand-in


def test_committed_lengths_are_the_templated_training_data():
    """The first examples of each variant, tokenized again as --write-lengths does."""
    if not list((PROJECT_ROOT / "data/05_model_input").glob("*/training_set.jsonl/*/training_set.jsonl")):
        # a fresh clone (CI): the seeded data_engineering pipeline writes the same training sets
        subprocess.run([sys.executable, "-m", "kedro", "run", "--pipelines", "data_engineering"],
                       cwd=PROJECT_ROOT, check=True, capture_output=True)
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec.loader.exec_module(bench)
        from mift_kedro import chat

        record = json.loads(bench.LENGTHS.read_text())
        tokenizer, name, is_llama2 = bench.lengths_tokenizer()
        assert (record["tokenizer"], record["tokenizer_is_llama2"]) == (name, is_llama2)
        for variant in bench.VARIANTS:
            frame = bench.latest_model_input(f"{variant}/training_set.jsonl")
            lengths = record["variants"][variant]
            assert len(lengths["prompt"]) == len(frame)
            for i in range(5):
                mask = chat.tokenize_example(tokenizer, frame["prompt"][i], frame["completion"][i])["completion_mask"]
                assert (lengths["prompt"][i], lengths["completion"][i]) == (mask.count(0), mask.count(1))
    finally:
        sys.path.remove(str(SCRIPT.parent))
