"""Standard benchmarks through lm-evaluation-harness: a tiny local multiple-choice task in the
ai2_arc schema scored on a tiny random Llama, base and adapter, checked against a direct
computation of the choices' log-likelihoods; the statistics; bad configurations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mift_kedro.config import ParameterError
from mift_kedro.pipelines.reporting import benchmark as B
from mift_kedro.pipelines.reporting import nodes
from mift_kedro.pipelines.reporting import report as R
from mift_kedro.pipelines.reporting.params import BenchmarksParams, reporting_params
from tests.conftest import tiny_llama

#: ARC-schema questions: 3, 4 and 5 choices, letter and numeric labels, as in ARC's own files.
QUESTIONS = [
    {"id": "q1", "question": "Which is a mammal?", "choices": {"text": ["whale", "shark", "trout"], "label": ["A", "B", "C"]}, "answerKey": "A"},
    {"id": "q2", "question": "What do plants need to make food?", "choices": {"text": ["sand", "sunlight", "noise", "plastic"], "label": ["1", "2", "3", "4"]}, "answerKey": "2"},
    {"id": "q3", "question": "Which state of water is ice?", "choices": {"text": ["gas", "plasma", "liquid", "solid", "vapour"], "label": ["A", "B", "C", "D", "E"]}, "answerKey": "D"},
    {"id": "q4", "question": "What pulls objects toward Earth?", "choices": {"text": ["magnetism", "gravity", "friction", "light"], "label": ["A", "B", "C", "D"]}, "answerKey": "B"},
    {"id": "q5", "question": "How many legs does an insect have?", "choices": {"text": ["four", "six", "eight"], "label": ["1", "2", "3"]}, "answerKey": "2"},
]


def _write_task(folder: Path, questions=QUESTIONS, split: str = "test") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    return folder


@pytest.fixture
def tiny(embedded_tokenizer):
    return tiny_llama(embedded_tokenizer, 64).eval(), embedded_tokenizer


def _cfg(folder: Path, task: str = "arc_easy", **kwargs) -> BenchmarksParams:
    return BenchmarksParams.model_validate({"tasks": {task: {"local_dir": str(folder)}}, "batch_size": 2, **kwargs})


def direct_loglikelihoods(model, tokenizer, question: dict) -> list[float]:
    """Each choice's summed log-probability given ``Question: ...\\nAnswer:``, computed here: the
    whole text encoded, the context's tokens split off, one forward pass per choice."""
    context = f"Question: {question['question']}\nAnswer:"
    out = []
    for choice in question["choices"]["text"]:
        whole = tokenizer.encode(context + " " + choice)
        n_context = len(tokenizer.encode(context))
        with torch.no_grad():
            logprobs = model(torch.tensor([whole])).logits[0].float().log_softmax(-1)
        out.append(sum(float(logprobs[i - 1, whole[i]]) for i in range(n_context, len(whole))))
    return out


def _check_against_direct(rows: pd.DataFrame, model, tokenizer) -> None:
    assert list(rows["id"]) == [q["id"] for q in QUESTIONS]
    for row, question in zip(rows.itertuples(), QUESTIONS, strict=True):
        direct = direct_loglikelihoods(model, tokenizer, question)
        assert row.n_choices == len(question["choices"]["text"])
        np.testing.assert_allclose(row.loglikelihoods, direct, rtol=0, atol=1e-3)
        assert row.pred == int(np.argmax(direct))
        target = question["choices"]["label"].index(question["answerKey"])
        assert row.target == target
        assert row.acc == float(np.argmax(direct) == target)


def test_each_answer_is_the_argmax_of_the_choices_log_likelihoods_for_base_and_adapter(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    cfg = _cfg(_write_task(tmp_path / "mini"))
    base = B.evaluate(model, tokenizer, cfg, model_name="base", display_name="Base")
    assert list(base.columns) == B.SAMPLE_COLUMNS and len(base) == len(QUESTIONS)
    assert set(base["task"]) == {"arc_easy"} and set(base["base_quantization"]) == {"none"}
    _check_against_direct(base, model, tokenizer)

    torch.manual_seed(1)
    adapter = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    tuned = B.evaluate(adapter, tokenizer, cfg, model_name="v", display_name="FT-V")
    _check_against_direct(tuned, adapter, tokenizer)
    # the adapter was applied: other scores, on the same base weights
    assert not np.allclose(np.concatenate(base["loglikelihoods"]), np.concatenate(tuned["loglikelihoods"]), atol=1e-3)
    assert set(tuned["base_checksum"]) == set(base["base_checksum"])

    metrics = nodes.compute_benchmark_metrics({"max_new_tokens": {"sentiment": 1, "out_of_sample": 1, "alpaca": 1}}, 0, base, tuned)
    assert list(metrics.columns) == nodes.METRIC_COLUMNS
    assert set(metrics["metric"]) == {"acc", "acc_norm"} and set(metrics["eval_set"]) == {"arc_easy"}
    acc = metrics.set_index(["model", "metric"])
    assert acc.loc[("base", "acc"), "value"] == pytest.approx(base["acc"].mean())
    assert acc.loc[("v", "acc"), "delta_vs_base"] == pytest.approx(tuned["acc"].mean() - base["acc"].mean())
    assert acc.loc[("base", "acc"), "ci_low"] <= acc.loc[("base", "acc"), "value"] <= acc.loc[("base", "acc"), "ci_high"]
    assert metrics.loc[metrics["model"] == "v", "p_value_vs_base"].between(0, 1).all()


def test_any_multiple_choice_task_takes_local_ai2_arc_files(tmp_path):
    """A task whose own data has another schema (openbookqa: question_stem) is scored from
    ai2_arc-schema files with ARC's prompt; its stock dataset is not used."""
    folder = _write_task(tmp_path / "obqa")
    _write_task(folder, QUESTIONS[:2], split="validation")
    spec = B.task_spec("openbookqa", B.BenchmarkTask(local_dir=str(folder)), 1, B.task_manager(), None)
    assert spec["task"] == "openbookqa" and spec["dataset_path"] == "json"
    assert spec["dataset_kwargs"] == {"data_files": {"validation": str(folder / "validation.jsonl"), "test": str(folder / "test.jsonl")}}
    assert spec["test_split"] == "test" and spec["fewshot_split"] == "validation"
    assert spec["doc_to_text"] == B.ARC_SCHEMA["doc_to_text"] and "process_docs" not in spec
    assert "dataset_name" not in spec
    # relative local_dir: under MIFT_DATA_DIR when set, else the stock task (the Hub)
    relative = B.BenchmarkTask(local_dir="obqa")
    assert B.task_spec("openbookqa", relative, 0, B.task_manager(), tmp_path)["dataset_path"] == "json"
    assert B.task_spec("openbookqa", relative, 0, B.task_manager(), None) == "openbookqa"
    assert B.task_spec("arc_easy", B.BenchmarkTask(), 0, B.task_manager(), tmp_path) == "arc_easy"


@pytest.mark.parametrize(
    ("tasks", "num_fewshot", "message"),
    [
        ({"arc_esay": None}, 0, r"^reporting\.benchmarks\.tasks\.arc_esay: lm-eval has no task 'arc_esay' \(close: arc_easy"),
        ({"arc_easy": {"local_dir": "nowhere"}}, 0, r"^reporting\.benchmarks\.tasks\.arc_easy\.local_dir: no file .*nowhere/test\.jsonl"),
        ({"arc_easy": {"local_dir": "mini", "split": "validation"}}, 0, r"^reporting\.benchmarks\.tasks\.arc_easy\.local_dir: no file .*mini/validation\.jsonl"),
        ({"mmlu": {"local_dir": "mini"}}, 0, r"^reporting\.benchmarks\.tasks\.mmlu\.local_dir: 'mmlu' is an lm-eval group"),
        ({"ai2_arc": {"local_dir": "mini"}}, 0, r"^reporting\.benchmarks\.tasks\.ai2_arc\.local_dir: 'ai2_arc' is an lm-eval tag"),
        ({"gsm8k": {"local_dir": "mini"}}, 0, r"^reporting\.benchmarks\.tasks\.gsm8k: 'gsm8k' is a generate_until task"),
        ({"arc_easy": {"local_dir": "mini"}}, 5, r"^reporting\.benchmarks\.num_fewshot=5 needs examples"),
    ],
)
def test_bad_benchmark_settings_name_the_parameter(tmp_path, tasks, num_fewshot, message):
    _write_task(tmp_path / "mini")
    cfg = BenchmarksParams.model_validate({"tasks": tasks, "num_fewshot": num_fewshot})
    with pytest.raises(ParameterError, match=message) as error:
        B.task_specs(cfg, tmp_path)
    assert "\n" not in str(error.value)


def test_the_hub_preflight_follows_tags_and_groups_down_to_their_datasets(tmp_path):
    """What the preflight asks the Hub for: the datasets of a tag's and a group's tasks, and
    nothing for a task scored from local files."""
    _write_task(tmp_path / "mini")
    cfg = BenchmarksParams.model_validate({"tasks": {
        "ai2_arc": None, "mmlu": None, "hellaswag": None, "arc_easy": {"local_dir": "mini"},
    }})
    assert B.hub_datasets(cfg, tmp_path) == {
        "ai2_arc": {("allenai/ai2_arc", None)},
        "mmlu": {("cais/mmlu", None)},
        "hellaswag": {("Rowan/hellaswag", None)},
    }


def test_a_bad_benchmark_stops_the_run_before_the_first_node(tmp_path, monkeypatch):
    import os

    from kedro.config import OmegaConfigLoader
    from kedro.io import DataCatalog, MemoryDataset

    from mift_kedro.hooks import ParameterValidationHooks
    from mift_kedro.pipelines import reporting
    from tests.conftest import PROJECT_ROOT

    shared = Path(os.environ["MIFT_DATA_DIR"])
    for source in ("twitter_sentiment", "alpaca"):  # the sources' files, but no arc_easy/
        (tmp_path / source).symlink_to(shared / source)
    monkeypatch.setenv("MIFT_DATA_DIR", str(tmp_path))
    params = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local")["parameters"]
    catalog = DataCatalog({"run_parameters": MemoryDataset()})
    catalog["parameters"] = params
    pipe = reporting.create_pipeline(variants=list(params["variants"]))
    with pytest.raises(ParameterError, match=r"^reporting\.benchmarks\.tasks\.arc_easy\.local_dir: no file"):
        ParameterValidationHooks().before_pipeline_run({}, pipe, catalog)


def test_the_benchmark_table_and_report_show_ci_and_paired_tests():
    rng = np.random.default_rng(0)
    samples = []
    for model, p in (("base", 0.6), ("v", 0.4)):
        acc = (rng.random(120) < p).astype(float)
        samples.append(pd.DataFrame({
            "model": model, "display_name": {"base": "Base", "v": "FT-V"}[model], "task": "arc_easy",
            "subtask": "arc_easy", "doc_id": range(120), "id": [f"q{i}" for i in range(120)], "target": 0,
            "n_choices": 4, "loglikelihoods": [[0.0] * 4] * 120, "pred": 0, "acc": acc, "acc_norm": acc,
            "doc_hash": [f"h{i}" for i in range(120)], "base_ref": "r", "base_quantization": "none",
            "base_dtype": "float32", "base_checksum": "c",
        }))
    params = {"max_new_tokens": {"sentiment": 1, "out_of_sample": 1, "alpaca": 1}, "bootstrap": {"resamples": 200}}
    metrics = nodes.compute_benchmark_metrics(params, 0, *samples)
    frame, markdown = nodes.build_benchmark_table(metrics)
    assert set(frame["task"]) == {"arc_easy"} and {"FT-V delta_vs_base", "FT-V p_holm_vs_base"} <= set(frame.columns)
    v = metrics[(metrics["model"] == "v") & (metrics["metric"] == "acc")].iloc[0]
    assert v["value"] == pytest.approx(samples[1]["acc"].mean())
    assert f"{v['value']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]" in markdown and "Holm" in markdown
    assert "**arc_easy**" in markdown and "n = 120 questions" in markdown
    html = R.render_report(
        pd.DataFrame(columns=nodes.METRIC_COLUMNS),
        pd.DataFrame(columns=["model", "display_name", "eval_set", "id"]),
        {}, benchmarks=metrics,
    )
    assert "id='benchmarks'" in html and "Length-normalised accuracy" in html
    # the forgetting curve and the seed summary take the benchmark's accuracy
    variants = {"v": {"display_name": "FT-V", "mix": {"sentiment": 0.5, "alpaca": 0.5}}}
    empty = pd.DataFrame(columns=nodes.METRIC_COLUMNS)
    curve, _, _ = nodes.build_forgetting_curve(empty, variants, params, None, None, metrics)
    assert list(curve["eval_set"]) == ["arc_easy"] and list(curve["metric"]) == ["acc"]
    summary, _ = nodes.build_seed_summary(empty, variants, [42], metrics)
    assert set(summary["eval_set"]) == {"arc_easy"} and set(summary["metric"]) == {"acc", "acc_norm"}


def test_paired_statistics_refuse_different_questions_under_one_id():
    def frame(model: str, hashes: list[str]) -> pd.DataFrame:
        return pd.DataFrame({"model": model, "task": "t", "subtask": "t", "doc_id": [0, 1], "doc_hash": hashes})

    samples = pd.concat([frame("base", ["a", "b"]), frame("v", ["a", "changed"])])
    with pytest.raises(ValueError, match="scored on different questions"):
        B.paired_samples(samples, "t")


def test_default_parameters_score_arc_easy_from_the_shared_files(shared_data, monkeypatch):
    from kedro.config import OmegaConfigLoader

    from tests.conftest import PROJECT_ROOT

    params = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local")["parameters"]
    cfg = reporting_params(params["reporting"]).benchmarks
    spec = B.task_specs(cfg, shared_data)["arc_easy"]
    assert spec["dataset_kwargs"]["data_files"]["test"] == str(shared_data / "arc_easy" / "test.jsonl")
    assert cfg.limit and not cfg.apply_chat_template


def test_the_cost_block_gives_seconds_per_100_questions_and_the_ci_width(tmp_path):
    from mift_kedro import results

    folder = tmp_path / "results" / "run"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    (folder / "pipeline_timings.json").write_text(json.dumps({
        "node_seconds": {"base.score_benchmarks": 50.0, "v.score_benchmarks": 62.5}, "pipeline_wall_s": 400.0,
        "started_at": "2026-12-01T00:00:00+00:00", "host": {"platform": "Linux", "cpu_count": 2},
    }))
    rows = [("base", "Base", "acc", 0.5, 0.4, 0.6), ("base", "Base", "acc_norm", 0.4, 0.3, 0.5),
            ("v", "FT-V", "acc", 0.45, 0.35, 0.56)]
    (folder / "benchmark_metrics.csv").write_text(
        "eval_set,model,display_name,metric,value,ci_low,ci_high,n\n"
        + "".join(f"arc_easy,{m},{d},{k},{v},{lo},{hi},250\n" for m, d, k, v, lo, hi in rows))
    block = "<!-- results:run:benchmark_cost:start -->\n<!-- results:run:benchmark_cost:end -->\n"
    rendered = results.render_readme(block, folder.parent)
    assert "| Base | arc_easy | 250 | 50 | 20 | 0.500 [0.400, 0.600] | 0.200 |" in rendered
    assert "| FT-V | arc_easy | 250 | 62 | 25 | 0.450 [0.350, 0.560] | 0.210 |" in rendered
    assert "acc_norm" not in rendered and "the whole run took 400 s" in rendered


def test_every_model_is_scored_and_the_base_row_waits_for_the_adapters_quantization():
    from mift_kedro.pipelines.reporting import create_pipeline

    pipe = create_pipeline(variants=["custom_only", "both_instructions"])
    outputs = pipe.all_outputs()
    for model in ("base", "custom_only", "both_instructions"):
        assert f"{model}.benchmark_samples" in outputs
    assert {"benchmark_metrics", "table_benchmarks_md", "table_benchmarks_csv", "plot_benchmarks"} <= outputs
    nodes_ = {n.name: n for n in pipe.nodes}
    assert set(nodes_["base.base_quantization"].inputs) == {
        "params:reporting", "custom_only.predictions", "both_instructions.predictions"}
    assert "base.quantization" in nodes_["base.score_benchmarks"].inputs
    assert "custom_only.adapter" in nodes_["custom_only.score_benchmarks"].inputs
    assert nodes_["custom_only.score_benchmarks"].func.keywords == {"model_name": "custom_only"}
    assert "benchmark_metrics" in nodes_["build_report"].inputs
    assert "benchmark_metrics" in nodes_["build_forgetting_curve"].inputs


def test_no_benchmark_configured_gives_empty_results_and_a_note():
    params = {"max_new_tokens": {"sentiment": 1, "out_of_sample": 1, "alpaca": 1}, "benchmarks": {"tasks": {}}}
    samples = nodes.score_benchmarks("never-loaded", params, 0)  # no model is loaded for no task
    assert samples.empty and list(samples.columns) == B.SAMPLE_COLUMNS
    metrics = nodes.compute_benchmark_metrics(params, 0, samples, pd.DataFrame())  # a saved empty file loads column-less
    assert metrics.empty and list(metrics.columns) == nodes.METRIC_COLUMNS
    frame, markdown = nodes.build_benchmark_table(metrics)
    assert frame.empty and "No benchmark configured (`reporting.benchmarks.tasks`)" in markdown
    assert nodes.plot_benchmarks(metrics) is not None


def test_the_node_scores_a_saved_base_and_its_adapter_on_one_base(tmp_path, embedded_tokenizer):
    from peft import LoraConfig, get_peft_model

    from mift_kedro import models
    from mift_kedro.datasets import AdapterDataset
    from tests.conftest import save_model_dir

    base = str(save_model_dir(tmp_path / "base", embedded_tokenizer, hidden_size=48))
    torch.manual_seed(2)
    tuned = get_peft_model(models.load_causal_lm(base, "none", "cpu"),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    AdapterDataset(filepath=str(tmp_path / "adapter")).save(tuned)
    params = {"max_new_tokens": {"sentiment": 1, "out_of_sample": 1, "alpaca": 1}, "device": "cpu", "torch_threads": 1,
              "benchmarks": {"tasks": {"arc_easy": {"local_dir": str(_write_task(tmp_path / "mini"))}}, "batch_size": 4}}
    base_rows = nodes.score_benchmarks(base, params, 0, display_name="Base", quantization="none")
    adapter = AdapterDataset(filepath=str(tmp_path / "adapter"), load_args={"device": "cpu"}).load()
    variant_rows = nodes.score_benchmarks(base, params, 0, model_name="v", variant={"display_name": "FT-V"}, adapter=adapter)
    assert set(base_rows["display_name"]) == {"Base"} and set(variant_rows["display_name"]) == {"FT-V"}
    assert list(base_rows["id"]) == list(variant_rows["id"]) == [q["id"] for q in QUESTIONS]
    assert set(variant_rows["base_checksum"]) == set(base_rows["base_checksum"])  # the same base weights
    assert not np.allclose(np.concatenate(base_rows["loglikelihoods"]), np.concatenate(variant_rows["loglikelihoods"]))
    metrics = nodes.compute_benchmark_metrics(params, 0, base_rows, variant_rows)
    assert set(metrics["model"]) == {"base", "v"} and (metrics["n"] == len(QUESTIONS)).all()
