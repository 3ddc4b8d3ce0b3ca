"""Batched generation (the reporting pipeline's) vs the notebook way, on the embedded model.

The notebook way is ``transformers.pipeline("text-generation")`` called one conversation at a
time. Both run greedy decoding on the same prompts in this one process; the script checks
that the answers are identical and prints the speed-up.

    python benchmarks/bench_generation.py                       # 16 Alpaca prompts, 64 tokens
    python benchmarks/bench_generation.py --eval-set sentiment --max-new-tokens 4 --n 48

Prompts come from the latest ``data/05_model_input/eval/<set>.jsonl`` (run the
data_engineering pipeline first); the model is the embedded GGUF as the training pipeline's
prepare_base_model node converts it (once per machine, ~40 s the first time, not timed).
"""

# ruff: noqa: T201  (a command-line benchmark prints its results)
from __future__ import annotations

import argparse
import glob
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mift_kedro import models  # noqa: E402
from mift_kedro.pipelines.reporting.generation import generate  # noqa: E402
from mift_kedro.threads import use_cpu_threads  # noqa: E402


def latest_eval_set(name: str) -> list:
    import pandas as pd

    files = sorted(glob.glob(str(ROOT / f"data/05_model_input/eval/{name}.jsonl/*/{name}.jsonl")))
    if not files:
        sys.exit(
            f"No evaluation set {name!r}: run `MIFT_DATA_DIR=shared/data kedro run "
            "--pipelines data_engineering` first."
        )
    return list(pd.read_json(files[-1], lines=True, dtype=False)["prompt"])


def model_ref() -> str:
    """The embedded model as the pipeline's prepare_base_model node converts it: once per
    machine (~/.cache/mift_kedro/converted, ~40 s the first time, not timed), then reused."""
    from mift_kedro.pipelines.training.nodes import prepare_base_model

    return str(prepare_base_model({"source": "embedded", "name": models.EMBEDDED_GGUF}).directory)


def notebook_way(model, tokenizer, prompts, max_new_tokens: int) -> tuple[list[str], float]:
    from transformers import pipeline

    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    start = time.perf_counter()
    answers = []
    for prompt in prompts:
        out = generator(
            list(prompt), max_new_tokens=max_new_tokens, do_sample=False, return_full_text=False,
        )
        answers.append(out[0]["generated_text"].strip())
    return answers, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval-set", default="alpaca", choices=["sentiment", "out_of_sample", "alpaca"])
    parser.add_argument("--n", type=int, default=16, help="number of prompts")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="the pipeline's default")
    parser.add_argument("--model", default=None, help="a model directory (default: see above)")
    parser.add_argument("--threads", default="auto", help="torch CPU threads (both methods): auto or N")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    prompts = latest_eval_set(args.eval_set)[: args.n]
    ref = args.model or model_ref()
    tokenizer = models.load_tokenizer(ref)
    model = models.load_causal_lm(ref, device="cpu").eval()
    use_cpu_threads(args.threads if args.threads == "auto" else int(args.threads))

    # Warm-up (first-call allocations), excluded from both timings.
    generate(model, tokenizer, prompts[:2], max_new_tokens=2, batch_size=2, progress=False)

    start = time.perf_counter()
    batched = generate(
        model, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, progress=False,
    )
    batched_s = time.perf_counter() - start
    single, single_s = notebook_way(model, tokenizer, prompts, args.max_new_tokens)

    ours = [g.prediction for g in batched]
    same = sum(a == b for a, b in zip(ours, single, strict=True))
    new_tokens = sum(g.completion_tokens for g in batched)
    print(f"model: {ref} (cpu, {torch.get_num_threads()} threads, torch {torch.__version__})")
    print(f"prompts: {len(prompts)} from eval set {args.eval_set!r}, max_new_tokens={args.max_new_tokens}, "
          f"greedy; {new_tokens} answer tokens")
    print(f"notebook way (pipeline, one prompt at a time): {single_s:8.1f} s")
    print(f"batched generate (batch_size={args.batch_size}, left padding, KV cache): {batched_s:8.1f} s")
    print(f"speed-up: {single_s / batched_s:.1f}x")
    print(f"identical greedy outputs: {same}/{len(prompts)}")
    for k, (a, b) in enumerate(zip(ours, single, strict=True)):
        if a != b:
            print(f"  differs at {k}:\n    batched : {a!r}\n    pipeline: {b!r}")
    if same != len(prompts):
        sys.exit(1)


if __name__ == "__main__":
    main()
