"""The Llama-2 reproduction rehearsed end to end on the CPU: `--env llama2` as configured,
with only the model-size overrides.

The base model is a tiny random Llama saved with a SentencePiece tokenizer trained here with
Llama-2's settings and, like NousResearch/Llama-2-7b-chat-hf, no chat template. Everything
else is the llama2 environment: its chat-template file, 4-bit NF4 QLoRA through bitsandbytes
(on the CPU), LoRA r=64 on the seven projections, gradient checkpointing, `accelerate launch`
with the project's llama2 config and 2 processes, reporting with `quantization: auto`, the
48-token sentiment budget and the reference study's table. BERTScore runs a tiny local
RoBERTa-type model (the llama2 roberta-large is not embedded).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests import processes
from tests.conftest import copy_project, save_model_dir, tiny_roberta_bertscore_model

pytestmark = pytest.mark.slow

VARIANTS = ("custom_only", "both_instructions")
BUDGET = 8  # examples per variant: 2 optimizer steps of 4 = exactly one epoch


def _overrides(base_dir: Path, bertscore_dir: Path) -> str:
    """Model size only: the tiny model, tiny budgets, 2 steps, small eval sets."""
    overrides = {
        "base_model.source": "local",
        "base_model.name": str(base_dir),
        "training.max_steps": 2,
        "training.effective_batch_size": 4,
        "training.batch_size": 2,
        "training.save_steps": 1,
        "training.gradient_checkpointing": "true",  # "auto" would leave it off on the CPU
        "eval_sets.sentiment.size": 6,
        "eval_sets.alpaca.size": 4,
        "reporting.max_new_tokens.out_of_sample": 12,
        "reporting.max_new_tokens.alpaca": 12,
        "reporting.bertscore.model_type": str(bertscore_dir),
        "reporting.bertscore.num_layers": 2,
        "reporting.bootstrap.resamples": 50,
        **{f"variants.{v}.budget": BUDGET for v in VARIANTS},
    }
    return ",".join(f"{key}={value}" for key, value in overrides.items())


def _only_version(path: Path) -> Path:
    versions = sorted(p for p in path.iterdir() if p.is_dir())
    assert len(versions) == 1, f"{path}: {[v.name for v in versions]}"
    return versions[0] / path.name


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, shared_data, llama2_sp_tokenizer_dir):
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("llama2")
    tokenizer = AutoTokenizer.from_pretrained(llama2_sp_tokenizer_dir)
    assert not tokenizer.chat_template  # as the Hub mirror: the template must come from conf/llama2
    base_dir = save_model_dir(root / "tiny-llama-2-chat", tokenizer, hidden_size=64)
    bertscore_dir = tiny_roberta_bertscore_model(root / "tiny-roberta")
    project = copy_project(root / "project")
    # The Hub-only benchmarks of conf/llama2 cannot load offline: the rehearsal scores the local
    # ARC-Easy files only, on a few questions (the preflight would stop the run otherwise).
    conf = project / "conf/llama2/parameters_reporting.yml"
    text = conf.read_text()
    for task in ("arc_challenge", "hellaswag", "mmlu", "winogrande"):
        assert f"      {task}: null\n" in text
        text = text.replace(f"      {task}: null\n", "")
    conf.write_text(text.replace("    limit: null\n    apply_chat_template", "    limit: 4\n    apply_chat_template"))
    env = {**os.environ, "MIFT_DATA_DIR": str(shared_data), "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "1000"}  # rich logs: one line per record
    params = ["--env", "llama2", "--params", _overrides(base_dir, bertscore_dir)]
    kedro = [sys.executable, "-m", "kedro", "run"]
    accelerate = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", "conf/llama2/accelerate_multi_gpu.yaml", "--num_processes", "2",
        "--main_process_port", str(processes.free_port()), "-m", "mift_kedro",
    ]
    logs = {}
    for name, command in (
        ("data_engineering", [*kedro, "--pipelines", "data_engineering", *params]),
        ("training", [*accelerate, "--pipelines", "training", *params]),
        ("reporting", [*kedro, "--pipelines", "reporting", *params]),
    ):
        result = processes.run(command, cwd=project, env=env, timeout=600)
        assert result.returncode == 0, f"{name}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        logs[name] = result.stdout + result.stderr
    return project, tokenizer, logs


def test_llama2_template_is_applied_to_a_tokenizer_without_one(rehearsal):
    project, _, logs = rehearsal
    assert "has no chat template: applying base_model.chat_template" in logs["training"]
    for model in ("base", *VARIANTS):
        predictions = pd.read_json(
            _only_version(project / f"data/07_model_output/{model}/predictions.jsonl"), lines=True
        )
        assert set(predictions["eval_set"]) == {"sentiment", "out_of_sample", "alpaca"}
        assert len(predictions) == 6 + 10 + 4
        assert predictions["prompt_text"].str.startswith("<s>[INST] ").all(), model
        assert predictions["prompt_text"].str.endswith(" [/INST]").all(), model


def test_training_ids_are_the_whole_conversation_tokenized_at_once(rehearsal):
    """The adapter's saved tokenizer carries the template; the run trained on exactly the
    whole-conversation token ids (one epoch of 8 examples: tokens seen = their sum)."""
    from transformers import AutoTokenizer

    project, _, _ = rehearsal
    for variant in VARIANTS:
        tokenizer = AutoTokenizer.from_pretrained(_only_version(project / f"data/06_models/{variant}/adapter"))
        assert "[INST]" in tokenizer.chat_template
        training_set = pd.read_json(
            _only_version(project / f"data/05_model_input/{variant}/training_set.jsonl"), lines=True
        )
        assert len(training_set) == BUDGET
        whole = [
            tokenizer(
                tokenizer.apply_chat_template(list(p) + list(c), tokenize=False), add_special_tokens=False
            )["input_ids"]
            for p, c in zip(training_set["prompt"], training_set["completion"], strict=True)
        ]
        assert all(ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id for ids in whole)
        metrics = json.loads(
            _only_version(project / f"data/06_models/{variant}/training_metrics.json").read_text()
        )
        assert (metrics["num_processes"], metrics["steps"], metrics["quantization"]) == (2, 2, "4bit")
        assert metrics["params"]["gradient_checkpointing"] is True
        assert metrics["tokens_seen"] == sum(len(ids) for ids in whole)


def test_one_qlora_adapter_per_variant(rehearsal):
    from kedro.io import Version

    from mift_kedro.datasets import AdapterDataset

    project, _, _ = rehearsal
    for variant in VARIANTS:
        path = project / f"data/06_models/{variant}/adapter"
        _only_version(path)
        model = AdapterDataset(filepath=str(path), version=Version(None, None)).load()
        config = model.peft_config["default"]
        assert (config.r, config.lora_alpha) == (64, 16)
        assert {name.rsplit(".", 1)[-1] for name in config.target_modules} == {  # all-linear, resolved by peft
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
        assert model.get_base_model().is_loaded_in_4bit


def test_every_row_ran_on_the_same_nf4_base(rehearsal):
    project, _, _ = rehearsal
    frames = [
        pd.read_json(_only_version(project / f"data/07_model_output/{m}/predictions.jsonl"), lines=True)
        for m in ("base", *VARIANTS)
    ]
    rows = pd.concat(frames)
    assert set(rows["model"]) == {"base", *VARIANTS}
    assert set(rows["base_quantization"]) == {"4bit"}
    assert rows["base_checksum"].nunique() == 1 and rows["base_dtype"].nunique() == 1


def test_report_sets_the_study_beside_the_run(rehearsal):
    project, _, _ = rehearsal
    comparison = pd.read_csv(_only_version(project / "data/08_reporting/study_comparison.csv"))
    assert set(comparison["model"]) == {"base", *VARIANTS}
    assert set(comparison["study_metric"]) == {"BLEU", "ROUGE", "BERTScore"}
    published = comparison.set_index(["eval_set", "study_metric", "model"])["study_value"]
    assert published[("sentiment", "ROUGE", "custom_only")] == 0.95
    assert published[("alpaca", "BERTScore", "both_instructions")] == 0.79
    assert comparison["value"].between(0, 1).all()  # the 0-1 scale of evaluate's bleu and rouge
    report = _only_version(project / "data/08_reporting/report.html").read_text()
    assert "Against the reference study" in report and "FT-BothInstruction (study)" in report
    assert "Base weights of every model (3 checked)" in report
