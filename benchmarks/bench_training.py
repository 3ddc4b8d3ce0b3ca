"""Training throughput: the project's setup vs TRL's SFTTrainer, same model, data and settings.

All runs train LoRA adapters on the embedded SmolLM2-135M in fp32 on the same examples, in
the same order (sequential sampler), with the same batch size, max length, learning rate and
LoRA settings, in this one process, one after the other:

* ``project``: the training pipeline's Trainer (padding-free batches with attention per
  example, LM head only at response positions; ``mift_kedro.pipelines.training``).
* ``trl-defaults``: ``trl.SFTTrainer`` with its remaining defaults (padded batches, gradient
  checkpointing on, its default loss).
* ``trl-nll``: the same with ``loss_type="nll"``.

It reports useful tokens/s (tokens of real examples; padding excluded), and model FLOP/s as a
fraction of this machine's fp32 matmul peak, which it measures first with the same number of
threads. Model FLOPs per useful token count what LoRA training of a frozen base needs: forward
(2 N) and input-gradient backward (2 N) through the decoder's linear layers, 6 N for the
trainable LoRA weights, causal attention, and the LM head only at the tokens with a loss.
The first step of each run is a warm-up and not timed.

    python benchmarks/bench_training.py                    # both_instructions, 6 timed steps
    python benchmarks/bench_training.py --variant custom_only --steps 4 --threads 2
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from transformers import PrinterCallback, TrainerCallback  # noqa: E402

from mift_kedro import chat, models  # noqa: E402
from mift_kedro.pipelines.training import nodes  # noqa: E402
from mift_kedro.pipelines.training.params import training_params  # noqa: E402
from mift_kedro.threads import use_cpu_threads  # noqa: E402

SEED = 42


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def matmul_peak(threads: int, seconds: float = 3.0) -> float:
    """Best fp32 GFLOP/s of square matmuls on this machine, with ``threads`` threads."""
    torch.set_num_threads(threads)
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            a @ b
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


class StepTimer(TrainerCallback):
    """Wall time and useful (non-padding) tokens per optimizer step."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.marks:
            self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

    def throughput(self) -> tuple[float, int, float]:
        """(tokens/s, tokens, seconds) over the steps after the first, as the Trainer counts."""
        (t0, n0), (t1, n1) = self.marks[1], self.marks[-1]
        return (n1 - n0) / (t1 - t0), n1 - n0, t1 - t0


def flops_per_example(cfg, lora_params: int, length: int, loss_tokens: int) -> float:
    d, layers = cfg.hidden_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * cfg.intermediate_size  # q,o + k,v + mlp
    linear = 4 * layers * per_layer * length + 6 * lora_params * length
    attention = 3 * 2 * layers * d * length * length / 2  # QK^T and AV, causal, fwd + 2x bwd
    head = 4 * d * cfg.vocab_size * loss_tokens
    return linear + attention + head


def latest_training_set(variant: str):
    import pandas as pd

    files = sorted(glob.glob(str(ROOT / f"data/05_model_input/{variant}/training_set.jsonl/*/training_set.jsonl")))
    if not files:
        sys.exit(f"No training set for {variant!r}: run `kedro run --pipelines data_engineering` first.")
    return pd.read_json(files[-1], lines=True, dtype=False)


def model_ref() -> str:
    """The embedded model as the pipeline's prepare_base_model node converts it: once per
    machine (~/.cache/mift_kedro/converted, ~40 s the first time, not timed), then reused."""
    from mift_kedro.pipelines.training.nodes import prepare_base_model

    return str(prepare_base_model({"source": "embedded", "name": models.EMBEDDED_GGUF}).directory)


def run_project(ref, frame, params, steps, tmp) -> StepTimer:
    from mift_kedro.pipelines.training.trainer import (
        CompletionOnlyTrainer,
        packed_collator,
        register_packed_attention,
    )

    tokenizer = models.load_tokenizer(ref)
    examples, _ = nodes.build_examples(tokenizer, frame, params.max_length, params.overlong)
    model = models.load_causal_lm(ref, device="cpu")
    model.set_attn_implementation(register_packed_attention())
    model = nodes.add_lora(model, params, SEED, False)
    args = nodes.training_arguments(params, Path(tmp) / "project", SEED, "cpu", False)
    args.max_steps, args.save_strategy, args.train_sampling_strategy = steps, "no", "sequential"
    timer = StepTimer()
    from datasets import Dataset

    trainer = CompletionOnlyTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(examples),
        data_collator=packed_collator(), callbacks=[timer],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return timer


def run_trl(ref, frame, params, steps, tmp, **overrides) -> StepTimer:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    tokenizer = models.load_tokenizer(ref)
    model = models.load_causal_lm(ref, device="cpu")
    config = SFTConfig(
        output_dir=str(Path(tmp) / "trl"),
        max_steps=steps,
        per_device_train_batch_size=params.batch_size,
        learning_rate=params.learning_rate,
        max_length=params.max_length,
        bf16=False,  # same precision as the project: fp32 on CPU
        use_cpu=True,
        seed=SEED,
        train_sampling_strategy="sequential",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        **overrides,
    )
    lora = LoraConfig(
        r=params.lora.r, lora_alpha=params.lora.alpha, lora_dropout=params.lora.dropout,
        target_modules=params.lora.target_modules, task_type="CAUSAL_LM",
    )
    timer = StepTimer()
    trainer = SFTTrainer(
        model=model, args=config, processing_class=tokenizer, peft_config=lora, callbacks=[timer],
        train_dataset=Dataset.from_pandas(frame[["prompt", "completion"]], preserve_index=False),
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="both_instructions")
    parser.add_argument("--steps", type=int, default=6, help="timed steps (plus one warm-up)")
    parser.add_argument("--threads", default="auto", help="CPU threads for every run, or auto")
    parser.add_argument("--runs", default="project,trl-defaults,trl-nll")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import yaml
    from transformers import AutoConfig

    conf = yaml.safe_load((ROOT / "conf/base/parameters_training.yml").read_text())["training"]
    params = training_params(conf)
    threads = use_cpu_threads(args.threads if args.threads == "auto" else int(args.threads))
    steps = args.steps + 1
    with tempfile.TemporaryDirectory() as tmp:
        ref = model_ref()
        tokenizer = models.load_tokenizer(ref)
        frame = latest_training_set(args.variant)
        # every run gets exactly the examples that fit, in the same order
        fits = [
            len(chat.tokenize_example(tokenizer, p, c)["input_ids"]) <= params.max_length
            for p, c in zip(frame["prompt"], frame["completion"], strict=True)
        ]
        frame = frame[fits].head(steps * params.batch_size).reset_index(drop=True)
        examples, _ = nodes.build_examples(tokenizer, frame, params.max_length, "drop")
        cfg = AutoConfig.from_pretrained(ref)
        lora_params = sum(
            p.numel() for p in nodes.add_lora(
                models.load_causal_lm(ref, device="cpu"), params, SEED, False
            ).parameters() if p.requires_grad
        )
        say(f"threads={threads}  batch={params.batch_size}  max_length={params.max_length}  "
            f"LoRA r={params.lora.r} ({lora_params / 1e6:.2f} M trainable)  variant={args.variant}")
        peak = matmul_peak(threads)
        say(f"fp32 matmul peak: {peak:.1f} GFLOP/s")

        runners = {
            "project": lambda: run_project(ref, frame, params, steps, tmp),
            "trl-defaults": lambda: run_trl(ref, frame, params, steps, tmp),
            "trl-nll": lambda: run_trl(ref, frame, params, steps, tmp, loss_type="nll"),
            "trl-nll-no-gc": lambda: run_trl(
                ref, frame, params, steps, tmp, loss_type="nll", gradient_checkpointing=False
            ),
        }
        # model FLOPs of the timed examples (steps 2..n): the same work for every run
        timed = examples[params.batch_size:]
        flops = sum(
            flops_per_example(cfg, lora_params, len(e["input_ids"]),
                              sum(t != -100 for t in e["labels"][1:]))
            for e in timed
        )
        useful = sum(len(e["input_ids"]) for e in timed)
        results = {}
        for name in args.runs.split(","):
            torch.manual_seed(SEED)
            _, tokens, seconds = runners[name]().throughput()
            rate = useful / seconds  # the same timed examples for every run, padding excluded
            mfu = flops / seconds / 1e9 / peak
            results[name] = {"useful_tokens_per_s": rate, "tokens": tokens, "seconds": seconds,
                             "model_gflops_per_s": flops / seconds / 1e9, "fraction_of_peak": mfu}
            say(f"{name:14s} {rate:6.1f} useful tokens/s  {flops / seconds / 1e9:5.1f} model GFLOP/s"
                f" = {mfu:4.0%} of peak  ({useful} tokens in {seconds:.1f} s)")
        # the machine may be busier or quieter now: take the higher peak (the harder target)
        later = matmul_peak(threads)
        if later > peak:
            say(f"fp32 matmul peak measured again: {later:.1f} GFLOP/s; fractions rescaled")
            for row in results.values():
                row["fraction_of_peak"] *= peak / later
            peak = later

    if "project" in results:
        project = results["project"]
        baselines = [n for n in results if n.startswith("trl")]
        for name in baselines:
            ratio = project["useful_tokens_per_s"] / results[name]["useful_tokens_per_s"]
            say(f"project vs {name}: {ratio:.2f}x")
        if baselines:
            fastest = max(baselines, key=lambda n: results[n]["useful_tokens_per_s"])
            ratio = project["useful_tokens_per_s"] / results[fastest]["useful_tokens_per_s"]
            say(f"project vs the faster baseline ({fastest}): {ratio:.2f}x (target >= 1.5x); "
                f"project at {project['fraction_of_peak']:.0%} of the fp32 matmul peak "
                f"{peak:.1f} GFLOP/s (target >= 50%)")
    if args.json:
        Path(args.json).write_text(json.dumps({"peak_gflops": peak, "threads": threads, **results}, indent=2))


if __name__ == "__main__":
    main()
