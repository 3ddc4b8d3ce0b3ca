"""The reporting pipeline's generation against what a user would write, greedy, same prompts.

Configurations, all on the embedded model (``common.model_ref()``), the same threads, the same
prompts, greedy decoding:

- ``project``: ``reporting.generation.generate`` (batch 16, length-sorted, the shared-prefix
  KV cache, prefill in length groups, finished answers leave the batch);
- ``generate, batched``: the chat template applied to batches of 16 conversations in input
  order, left-padded (``apply_chat_template(..., padding=True)``), one ``model.generate`` each:
  what a competent notebook does, no sorting, no prefix cache;
- ``pipeline, batch_size=16``: ``transformers.pipeline("text-generation")`` given the list of
  conversations with ``batch_size=16`` (left padding, the tokenizer's pad token, set as a user
  would);
- ``pipeline, one by one``: the same pipeline called one conversation at a time.

Cases: ``sentiment`` (64 tweets, ``reporting.max_new_tokens.sentiment`` = 10 new tokens:
short answers, long shared instruction) and ``alpaca`` (16 prompts, 64 new tokens). Each
configuration runs ``--repeats`` times, interleaved, after an untimed warm-up; the rate is
prompts per second. Every configuration's answers must equal the project's (the script lists
the differences and exits 1 otherwise). The ceiling is measured in the same run: one decode
step at batch 1 and at batch 16, and how long the project's forward passes take (the shared
prefix once, each prompt's own tokens, one step per answer token: what any exact method computes). The record goes to docs/results/bench/generation.json
(``python -m mift_kedro.results render-readme`` puts it in docs/benchmarks.md).

    python benchmarks/bench_generation.py               # the record (~15 min on 2 cores)
    python benchmarks/bench_generation.py --smoke       # a quick try: 8 prompts, 1 repeat, no record
"""

# ruff: noqa: T201  (a command-line benchmark prints its results)
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import common

from mift_kedro import models
from mift_kedro.chat import render_prompt, tokenize_prompt
from mift_kedro.pipelines.reporting.generation import generate
from mift_kedro.threads import use_cpu_threads

BATCH = 16
CASES = {"sentiment": (64, 10), "alpaca": (16, 64)}  # eval set: (prompts, max_new_tokens)


def runners(model: Any, tokenizer: Any, prompts: list, max_new_tokens: int) -> dict[str, Callable[[], list[str]]]:
    """Each configuration as a function returning the answers in input order."""
    import torch
    from transformers import pipeline

    tokenizer.padding_side = "left"  # batched generation needs left padding; the project pads itself
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    greedy = {"max_new_tokens": max_new_tokens, "do_sample": False}
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)

    def project() -> list[str]:
        answers = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=BATCH, progress=False)
        return [a.prediction for a in answers]

    @torch.inference_mode()
    def generate_batched() -> list[str]:
        answers = []
        for start in range(0, len(prompts), BATCH):
            batch = tokenizer.apply_chat_template(
                [list(p) for p in prompts[start : start + BATCH]], add_generation_prompt=True,
                padding=True, return_tensors="pt", return_dict=True,
            )
            out = model.generate(**batch, **greedy, pad_token_id=tokenizer.pad_token_id)
            new = out[:, batch["input_ids"].shape[1] :]
            answers += [a.strip() for a in tokenizer.batch_decode(new, skip_special_tokens=True)]
        return answers

    def pipeline_batched() -> list[str]:
        out = generator([list(p) for p in prompts], batch_size=BATCH, return_full_text=False, **greedy)
        return [o[0]["generated_text"].strip() for o in out]

    def pipeline_one_by_one() -> list[str]:
        return [generator(list(p), return_full_text=False, **greedy)[0]["generated_text"].strip() for p in prompts]

    return {
        "project": project,
        "generate, batched": generate_batched,
        f"pipeline, batch_size={BATCH}": pipeline_batched,
        "pipeline, one by one": pipeline_one_by_one,
    }


def timed(run: Callable[[], list[str]]) -> Callable[[], tuple[float, list[str]]]:
    def go() -> tuple[float, list[str]]:
        start = time.perf_counter()
        answers = run()
        return time.perf_counter() - start, answers

    return go


def decode_step_ms(model: Any, rows: int, context: int, steps: int = 8) -> float:
    """Median time of one cached decode step of ``rows`` rows over ``context`` tokens."""
    import torch

    with torch.inference_mode():
        ids = torch.full((rows, context), 100, dtype=torch.long)
        cache = model(input_ids=ids, use_cache=True, logits_to_keep=1).cache
        token, times = ids[:, :1], []
        for _ in range(steps):
            start = time.perf_counter()
            model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def project_forward_seconds(model: Any, tokenizer: Any, prompts: list, max_new_tokens: int) -> dict[str, float]:
    """Seconds (and ``answer_tokens``) of one project run: in all, and in its forward passes (timed by hooks): the
    prefill (the shared prefix once, each prompt's own tokens) and the decode steps (one new
    token for every row still answering). These tokens are what any exact method computes."""
    seconds, started = {"prefill": 0.0, "decode": 0.0}, []

    def before(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        started.append(("decode" if kwargs["input_ids"].shape[1] == 1 else "prefill", time.perf_counter()))

    def after(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        part, start = started.pop()
        seconds[part] += time.perf_counter() - start

    hooks = [model.register_forward_pre_hook(before, with_kwargs=True),
             model.register_forward_hook(after, with_kwargs=True)]
    try:
        start = time.perf_counter()
        answers = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=BATCH, progress=False)
        seconds["total"] = time.perf_counter() - start
        seconds["answer_tokens"] = sum(a.completion_tokens for a in answers)
    finally:
        for hook in hooks:
            hook.remove()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--n", type=int, default=None, help="prompts per case (default: 64 sentiment, 16 alpaca)")
    parser.add_argument("--threads", default="auto", help="torch CPU threads for every configuration: auto or N")
    parser.add_argument("--smoke", action="store_true", help="8 prompts, 1 repeat, no record: does it run?")
    parser.add_argument("--out", default=None, help="write the record here instead of docs/results/bench/")
    args = parser.parse_args()
    if args.smoke:
        args.n, args.repeats = args.n or 8, 1
    logging.basicConfig(level=logging.WARNING)

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the pipeline's advice to use a dataset, said once per call
    ref = common.model_ref()
    tokenizer = models.load_tokenizer(ref)
    model = models.load_causal_lm(ref, device="cpu").eval()
    use_cpu_threads(args.threads if args.threads == "auto" else int(args.threads))
    threads = torch.get_num_threads()

    cases, notes, failed = [], [], False
    for name in args.cases:
        n, max_new_tokens = CASES[name]
        prompts = list(common.latest_model_input(f"eval/{name}.jsonl")["prompt"])[: args.n or n]
        configs = runners(model, tokenizer, prompts, max_new_tokens)
        common.say(f"{name}: {len(prompts)} prompts, {max_new_tokens} new tokens, {threads} thread(s)")
        for warm_up in runners(model, tokenizer, prompts[:2], 2).values():  # untimed
            warm_up()
        results = common.interleaved({c: timed(run) for c, run in configs.items()}, args.repeats)

        reference = results["project"][0][1]
        checks = []
        for config, runs in results.items():
            same = [sum(a == b for a, b in zip(answers, reference, strict=True)) for _, answers in runs]
            checks.append(f"{config} {min(same)}/{len(prompts)}")
            for _, answers in runs:
                for k, (a, b) in enumerate(zip(answers, reference, strict=True)):
                    if a != b:
                        failed = True
                        common.say(f"  DIFFERS {name} #{k} {config}: {a!r} vs project {b!r}")
        rates = {c: [len(prompts) / seconds for seconds, _ in runs] for c, runs in results.items()}
        rows = [common.row("project", rates["project"])]
        rows += [common.row(c, r, rates["project"]) for c, r in rates.items() if c != "project"]
        # The ceiling, measured: decode per row at batch 1 vs 16, and the project's forward passes.
        context = round(statistics.mean(len(tokenize_prompt(tokenizer, render_prompt(tokenizer, p))) for p in prompts))
        one, sixteen = decode_step_ms(model, 1, context), decode_step_ms(model, BATCH, context)
        spent = project_forward_seconds(model, tokenizer, prompts, max_new_tokens)
        floor = spent["prefill"] + spent["decode"]
        batched = f"pipeline, batch_size={BATCH}"
        pipeline_s = statistics.median(len(prompts) / r for r in rates[batched])
        one_s = statistics.median(len(prompts) / r for r in rates["pipeline, one by one"])
        notes.append(
            f"{name}, ceiling (measured): one decode step over {context} tokens takes {one:.1f} ms at batch 1 and "
            f"{sixteen:.1f} ms at batch {BATCH} ({one * BATCH / sixteen:.1f}x less per row). The project's forward "
            f"passes took {floor:.2f} s of a {spent['total']:.2f} s run (prefill {spent['prefill']:.2f} s: the "
            f"shared prefix once and each prompt's own tokens; decode {spent['decode']:.2f} s: one token per row "
            "still answering), tokens any exact method computes; at these per-token costs no method runs this "
            f"case more than {pipeline_s / floor:.2f}x faster than pipeline(batch_size={BATCH}) or "
            f"{one_s / floor:.1f}x faster than one by one (their median times)."
        )
        cases.append({
            "case": f"{name} ({len(prompts)} prompts, {max_new_tokens} new tokens)",
            "checks": f"outputs identical to the project's: {', '.join(checks[1:])}; {spent['answer_tokens']:.0f} "
                      "answer tokens",
            "rows": rows,
        })
        common.say(rows_text(cases[-1]))
        common.say(notes[-1])

    if failed:
        common.say("answers differ between configurations (above): no record written")
        sys.exit(1)
    if args.smoke and not args.out:
        common.say("smoke run: no record written (pass --out to keep one)")
        return
    common.write_record("generation", {
        "title": "Generation: the project vs plain generate and pipeline()",
        "machine": common.machine(threads),
        "repeats": args.repeats,
        "unit": "prompts/s",
        "project": "project",
        "cases": cases,
        "notes": [
            "Greedy, embedded SmolLM2-135M (fp32, CPU), batch 16, warm-up untimed; rates are prompts per "
            "second, speed-up = the project's rate over the configuration's, repeat by repeat.",
            *notes,
        ],
    }, args.out)


def rows_text(case: dict[str, Any]) -> str:
    lines = [f"  {case['case']}: {case['checks']}"]
    for r in case["rows"]:
        up = r.get("project_speedup")
        lines.append(f"  {r['config']:<24} {r['median']:8.3f} prompts/s (min {r['min']:.3f}, max {r['max']:.3f})"
                     + (f"  project {up['median']:.2f}x" if up else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
