"""The reporting pipeline's benchmark node against lm-evaluation-harness's own command line.

Both score the same task (ARC-Easy from ``MIFT_DATA_DIR``'s ``arc_easy/test.jsonl``, the
first ``--limit`` questions) with the same model: the embedded model (``common.model_ref()``,
fp32 on the CPU) plus a LoRA adapter (rank 8 on the attention projections, randomly
initialised with a fixed seed and saved with ``AdapterDataset``, so it changes the scores):

- ``project``: ``reporting.nodes.score_benchmarks`` (the adapter loaded as the pipeline loads
  it, lm-eval's ``HFLM`` wrapping it, ``reporting.benchmarks.batch_size``), in a fresh Python
  process;
- ``lm_eval CLI, --batch_size N``: ``lm_eval --model hf --model_args
  pretrained=<base>,peft=<adapter>,dtype=float32 --tasks arc_easy --include_path <the same task
  config> --limit L --log_samples``, for each ``--batch-sizes`` value (the fastest is its best).

Every configuration runs in its own process (imports, model load and lm-eval's task index
included, as a user meets them), ``--repeats`` times, interleaved; the rate is questions per
second. Every configuration's per-sample answers (argmax of the choices' log-likelihoods, and
acc) must equal the project's and its log-likelihoods agree within 1e-3 (else the script lists
the differences and exits 1). The record goes to docs/results/bench/lm_eval.json.

    MIFT_DATA_DIR=../shared/data python benchmarks/bench_lm_eval.py            # the record
    MIFT_DATA_DIR=../shared/data python benchmarks/bench_lm_eval.py --smoke    # 10 questions, 1 repeat, no record
"""

# ruff: noqa: T201  (a command-line benchmark prints its results)
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import yaml

TASK = "arc_easy"
PROJECT = '''
import json, sys
from mift_kedro.datasets import AdapterDataset
from mift_kedro.pipelines.reporting import nodes
base, adapter, limit, batch, threads, out = sys.argv[1:7]
params = {"max_new_tokens": {"sentiment": 1, "out_of_sample": 1, "alpaca": 1}, "device": "cpu",
          "torch_threads": int(threads), "quantization": "auto",
          "benchmarks": {"tasks": {"arc_easy": {"local_dir": "arc_easy"}}, "limit": int(limit), "batch_size": int(batch)}}
rows = nodes.score_benchmarks(base, params, 0, model_name="v", variant={"display_name": "v"},
                              adapter=AdapterDataset(filepath=adapter, load_args={"device": "cpu"}).load())
rows.to_json(out, orient="records", lines=True)
'''


def make_adapter(base: str, folder: Path) -> str:
    """A seeded random LoRA adapter on ``base``, saved as the training pipeline saves one."""
    import torch
    from peft import LoraConfig, get_peft_model

    from mift_kedro import models
    from mift_kedro.datasets import AdapterDataset

    torch.manual_seed(0)
    model = get_peft_model(
        models.load_causal_lm(base, "none", "cpu"),
        LoraConfig(r=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False),
    )
    AdapterDataset(filepath=str(folder)).save(model)
    return str(folder)


def task_config(folder: Path) -> Path:
    """The project's task config over the local files, as a YAML file for ``--include_path``."""
    from mift_kedro.pipelines.reporting import benchmark

    spec = benchmark.task_spec(TASK, benchmark.BenchmarkTask(local_dir="arc_easy"), 0, benchmark.task_manager(), benchmark.data_dir())
    if not isinstance(spec, dict):
        sys.exit("Set MIFT_DATA_DIR (e.g. ../shared/data): the benchmark scores arc_easy from its local files.")
    spec = {k: v for k, v in spec.items() if k != "metadata"}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TASK}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def run_project(base: str, adapter: str, limit: int, batch: int, threads: int, out: Path) -> tuple[float, list[dict]]:
    env = {**os.environ, "PYTHONPATH": str(common.ROOT / "src")}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", PROJECT, base, adapter, str(limit), str(batch), str(threads), str(out)],
                   check=True, env=env, capture_output=True, text=True, cwd=common.ROOT)
    seconds = time.perf_counter() - start
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return seconds, [{"doc_id": r["doc_id"], "pred": r["pred"], "acc": r["acc"], "lls": r["loglikelihoods"]} for r in rows]


def run_cli(base: str, adapter: str, limit: int, batch: int, include: Path, out: Path) -> tuple[float, list[dict]]:
    lm_eval = Path(sys.executable).with_name("lm_eval")
    command = [
        str(lm_eval), "--model", "hf", "--model_args", f"pretrained={base},peft={adapter},dtype=float32",
        "--tasks", TASK, "--include_path", str(include), "--device", "cpu", "--batch_size", str(batch),
        "--limit", str(limit), "--num_fewshot", "0", "--log_samples", "--output_path", str(out),
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=common.ROOT)
    seconds = time.perf_counter() - start
    [samples] = sorted(out.rglob(f"samples_{TASK}_*.jsonl"))[-1:]
    rows = []
    for line in samples.read_text().splitlines():
        r = json.loads(line)
        lls = [float(x[0]) for x in r["filtered_resps"]]
        rows.append({"doc_id": r["doc_id"], "pred": max(range(len(lls)), key=lls.__getitem__), "acc": r["acc"], "lls": lls})
    for path in out.rglob("*"):  # the next repeat writes its own files
        if path.is_file():
            path.unlink()
    return seconds, sorted(rows, key=lambda r: r["doc_id"])


def differences(rows: list[dict], reference: list[dict]) -> list[str]:
    """Where ``rows`` and the project's answers disagree (answers, acc, log-likelihoods)."""
    if [r["doc_id"] for r in rows] != [r["doc_id"] for r in reference]:
        return ["other questions"]
    out = []
    for r, p in zip(rows, reference, strict=True):
        if r["pred"] != p["pred"] or r["acc"] != p["acc"]:
            out.append(f"doc {r['doc_id']}: answer {r['pred']} vs project {p['pred']}")
        elif max(abs(a - b) for a, b in zip(r["lls"], p["lls"], strict=True)) > 1e-3:
            out.append(f"doc {r['doc_id']}: log-likelihoods {r['lls']} vs project {p['lls']}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=100, help="questions (the first N of the test split)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16, help="the project's reporting.benchmarks.batch_size")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32], help="the CLI's --batch_size values")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="the project's torch threads (the CLI uses torch's default)")
    parser.add_argument("--smoke", action="store_true", help="10 questions, 1 repeat, one CLI batch size, no record")
    parser.add_argument("--out", default=None, help="write the record here instead of docs/results/bench/")
    args = parser.parse_args()
    if args.smoke:
        args.limit, args.repeats, args.batch_sizes = 10, 1, args.batch_sizes[:1]

    base = common.model_ref()
    with tempfile.TemporaryDirectory(prefix="bench_lm_eval_") as tmp:
        tmp = Path(tmp)
        adapter = make_adapter(base, tmp / "adapter")
        include = task_config(tmp / "tasks")
        configs = {"project": lambda: run_project(base, adapter, args.limit, args.batch_size, args.threads, tmp / "project.jsonl")}
        for batch in args.batch_sizes:
            configs[f"lm_eval CLI, --batch_size {batch}"] = (
                lambda batch=batch: run_cli(base, adapter, args.limit, batch, include, tmp / f"cli_{batch}"))
        common.say(f"{TASK}: {args.limit} questions, base + adapter, {args.repeats} repeat(s)")
        results = common.interleaved(configs, args.repeats)

    reference = results["project"][0][1]
    failed, checks = False, []
    for config, runs in results.items():
        problems = [d for _, rows in runs for d in differences(rows, reference)]
        checks.append(f"{config}: {'same' if not problems else f'{len(problems)} difference(s)'} per-sample answers")
        for problem in problems[:10]:
            failed = True
            common.say(f"  DIFFERS {config}: {problem}")
    rates = {c: [args.limit / seconds for seconds, _ in runs] for c, runs in results.items()}
    rows = [common.row("project", rates["project"])]
    rows += [common.row(c, r, rates["project"]) for c, r in rates.items() if c != "project"]
    for r in rows:
        common.say(f"  {r['config']}: {r['min']:.2f} / {r['median']:.2f} / {r['max']:.2f} questions/s")
    if failed:
        sys.exit("The configurations disagree on the per-sample answers (above).")
    if args.smoke:
        return
    accuracy = sum(r["acc"] for r in reference) / len(reference)
    common.write_record("lm_eval", {
        "title": "Benchmark node vs lm-evaluation-harness's CLI (ARC-Easy, base + adapter)",
        "machine": common.machine(args.threads),
        "repeats": args.repeats,
        "unit": "questions/s",
        "project": "project",
        "cases": [{"case": f"{TASK}, {args.limit} questions", "checks": "; ".join(checks), "rows": rows}],
        "notes": [
            "Each configuration in its own process, end to end: imports, model and adapter load, lm-eval's task "
            "index and the scoring; the embedded model in fp32 on the CPU with a seeded random LoRA adapter.",
            f"Accuracy of that model on these questions: {accuracy:.3f} (every configuration the same answers).",
        ],
    }, args.out)


if __name__ == "__main__":
    main()
