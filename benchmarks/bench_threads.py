"""The CPU-thread policy (`mift_kedro.threads`) measured on both workloads, idle and busy.

For each condition — the CPU idle, and one core kept busy by another process — the script
records how many threads `auto` picks, then times generation (embedded SmolLM2, greedy,
batched) and training steps (LoRA on the same model, forward + backward + AdamW on a batch of
real templated examples) at 1 thread and at every core, interleaved, several repeats, and
says whether `auto` picked the faster setting for each workload. Results: a Markdown table and
JSON in docs/results/threads.{md,json}.

    python benchmarks/bench_threads.py [--repeats 3] [--out docs/results/threads]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mift_kedro import chat, models  # noqa: E402
from mift_kedro.pipelines.reporting.generation import generate  # noqa: E402
from mift_kedro.pipelines.training.nodes import prepare_base_model  # noqa: E402
from mift_kedro.threads import free_cores  # noqa: E402

DATA = Path(os.environ.get("MIFT_DATA_DIR", ROOT.parent / "shared" / "data"))


def _prompts(n: int) -> list:
    rows = pd.read_json(DATA / "alpaca" / "test.jsonl", lines=True).head(n)
    return [chat.user_message(r.instruction, r.input) for r in rows.itertuples()]


def _training_batch(tokenizer, n: int) -> dict[str, torch.Tensor]:
    rows = pd.read_json(DATA / "twitter_sentiment" / "train.jsonl", lines=True).head(n)
    examples = [
        chat.tokenize_example(
            tokenizer, chat.user_message("Classify the sentiment of this tweet.", r.text),
            chat.assistant_message("positive" if r.feeling else "negative"),
        )["input_ids"]
        for r in rows.itertuples()
    ]
    width = max(map(len, examples))
    ids = torch.full((n, width), tokenizer.pad_token_id)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e)], mask[i, : len(e)] = torch.tensor(e), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def _time(work, threads: int) -> tuple[float, object]:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "threads")
    args = parser.parse_args()

    from peft import LoraConfig, get_peft_model

    converted = prepare_base_model({"source": "embedded", "name": models.EMBEDDED_GGUF})
    tokenizer = models.load_tokenizer(str(converted.directory))
    base = models.load_causal_lm(str(converted.directory), "none", "cpu").eval()
    prompts = _prompts(args.prompts)
    trainee = get_peft_model(models.load_causal_lm(str(converted.directory), "none", "cpu"),
                             LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    optimizer = torch.optim.AdamW([p for p in trainee.parameters() if p.requires_grad], lr=1e-4)
    batch = _training_batch(tokenizer, 8)

    def generation():
        return generate(base, tokenizer, prompts, max_new_tokens=args.new_tokens, batch_size=8, progress=False)

    def training_step():
        trainee(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    cores = os.cpu_count() or 1
    settings = sorted({1, cores})
    reference = [g.prediction for g in generation()]  # warm-up, and the answers to check
    training_step()
    rows = []
    for condition in ("idle", "one core busy"):
        load = None
        if condition != "idle":
            load = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1.0)
        try:
            picked = free_cores()
            times = {(w, t): [] for w in ("generation", "training") for t in settings}
            for _ in range(args.repeats):
                for threads in settings:  # interleaved
                    seconds, answers = _time(generation, threads)
                    assert [g.prediction for g in answers] == reference  # threads change speed only
                    times[("generation", threads)].append(seconds)
                    times[("training", threads)].append(_time(training_step, threads)[0])
        finally:
            if load is not None:
                load.kill()
                load.wait()
        for workload in ("generation", "training"):
            medians = {t: statistics.median(times[(workload, t)]) for t in settings}
            fastest = min(medians, key=medians.get)
            rows.append({
                "condition": condition, "workload": workload, "auto_picks": picked,
                **{f"{t}_threads_s": [round(min(times[(workload, t)]), 3), round(medians[t], 3),
                                      round(max(times[(workload, t)]), 3)] for t in settings},
                "fastest": fastest, "auto_is_fastest": picked == fastest,
                "auto_vs_fastest": round(medians[picked] / medians[fastest], 3),
            })
    record = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.platform()}, {cores} CPUs, torch {torch.__version__}",
        "command": "python benchmarks/bench_threads.py " + " ".join(sys.argv[1:]),
        "workloads": {
            "generation": f"{args.prompts} Alpaca prompts, {args.new_tokens} new tokens, batch 8, greedy",
            "training": "one LoRA (r=16, all linear) step on 8 tweets: forward, backward, AdamW",
        },
        "repeats": args.repeats, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    head = "| condition | workload | auto picks | " + " | ".join(f"{t} thread(s): s min / median / max" for t in settings)
    lines = [head + " | fastest | auto's time / fastest |", "|" + "---|" * (4 + len(settings) + 1)]
    for r in rows:
        cells = " | ".join(" / ".join(f"{v:.2f}" for v in r[f"{t}_threads_s"]) for t in settings)
        lines.append(f"| {r['condition']} | {r['workload']} | {r['auto_picks']} | {cells} | {r['fastest']} | {r['auto_vs_fastest']:.2f} |")
    text = (
        f"**CPU threads: the `auto` policy on both workloads** — {record['measured_at']}, "
        f"{record['machine']}; `{record['command'].strip()}`, {args.repeats} interleaved repeats; "
        f"generation: {record['workloads']['generation']} (answers checked equal at every setting); "
        f"training: {record['workloads']['training']}. Seconds per workload run.\n\n" + "\n".join(lines) + "\n"
    )
    args.out.with_suffix(".md").write_text(text)
    print(text)  # noqa: T201


if __name__ == "__main__":
    main()
