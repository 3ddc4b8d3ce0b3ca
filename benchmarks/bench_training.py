"""Training throughput: the training pipeline's trainer vs TRL's SFTTrainer as a user would run it.

Every configuration trains a LoRA adapter (r=16, all linear layers, as conf/base) on the
embedded SmolLM2-135M in fp32, on the same both_instructions examples in the same order
(sequential sampler), batch 8, same learning rate, with the same CPU threads, in this one
process; the configurations are interleaved and repeated (``--repeats``, default 5):

* ``project``: the pipeline's own steps (``nodes.model_with_adapter`` + ``nodes.build_trainer``):
  TRL's SFTTrainer with padding-free batches, the LM head at response positions only (its
  own loss, without TRL's per-token metrics), attention per example.
* ``trl-best``: the strongest plain TRL configuration found for this data on a CPU:
  ``padding_free=True`` (no padding), completion-only loss, ``loss_type="nll"`` (fused LM
  head), ``max_length=None``, no gradient checkpointing; SDPA attention (transformers' default).
* ``trl-defaults``: SFTTrainer with its remaining defaults (padded batches, gradient
  checkpointing on), fp32.
* ``project-bf16`` and ``trl-best-bf16``: the same two with bf16 autocast (fp32 weights), for
  CPUs with bf16 matmul units (``training.sft: {bf16: true}`` in the pipeline; TRL's default).

Reported per configuration: useful tokens/s (tokens of real examples; padding excluded), model
FLOP/s, and their share of this machine's matmul peak in the run's precision (fp32 or bf16), measured before and after with the
same threads (the higher is used). Model FLOPs per example count what LoRA training of a
frozen base needs: forward (2 N) and input-gradient backward (2 N) through the decoder's linear
layers, 6 N for the LoRA weights, causal attention, and the LM head only at the tokens with a
loss. The first step of each run is a warm-up and is not timed.

    python benchmarks/bench_training.py                          # 5 repeats, 4 timed steps
    python benchmarks/bench_training.py --repeats 5 --profile    # the kept record
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import torch  # noqa: E402
from transformers import PrinterCallback, TrainerCallback  # noqa: E402

from mift_kedro import chat, models  # noqa: E402
from mift_kedro.pipelines.training import nodes  # noqa: E402
from mift_kedro.pipelines.training.params import training_params  # noqa: E402
from mift_kedro.threads import use_cpu_threads  # noqa: E402

ROOT = common.ROOT
SEED = 42
#: The strongest plain-TRL configuration found for this data on a CPU.
TRL_BEST = {"padding_free": True, "max_length": None, "loss_type": "nll", "activation_checkpointing": False}


def matmul_peak(threads: int, seconds: float = 3.0, dtype: torch.dtype = torch.float32) -> float:
    """Best GFLOP/s of square matmuls in ``dtype`` on this machine, with ``threads`` threads."""
    torch.set_num_threads(threads)
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            a @ b
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


class StepTimer(TrainerCallback):
    """Wall time of the optimizer steps after the first ``skip``."""

    def __init__(self, skip: int = 1) -> None:
        self.marks: list[float] = []
        self.skip = skip

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.marks:
            self.marks.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append(time.perf_counter())

    def seconds(self) -> float:
        return self.marks[-1] - self.marks[self.skip]


def flops_per_example(cfg, lora_params: int, length: int, loss_tokens: int) -> float:
    d, layers = cfg.hidden_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * cfg.intermediate_size  # q,o + k,v + mlp
    linear = 4 * layers * per_layer * length + 6 * lora_params * length
    attention = 3 * 2 * layers * d * length * length / 2  # QK^T and AV, causal, fwd + 2x bwd
    head = 4 * d * cfg.vocab_size * loss_tokens
    return linear + attention + head


def bench_params(threads: int, steps: int):
    import yaml

    conf = yaml.safe_load((ROOT / "conf/base/parameters_training.yml").read_text())["training"]
    return training_params(conf, {
        "quantization": "none", "lora": {"dropout": 0.0}, "max_steps": steps, "save_steps": 10**6,
        "torch_threads": threads, "sft": {"train_sampling_strategy": "sequential"},
    })


class StepProfiler(TrainerCallback):
    """torch.profiler over the optimizer steps after the first."""

    def __init__(self) -> None:
        self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        self.steps = 0

    def on_step_begin(self, args, state, control, **kwargs):
        if self.steps == 1:
            self.profiler.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1

    def on_train_end(self, args, state, control, **kwargs):
        self.profiler.__exit__(None, None, None)


def run_project(ref, frame, params, tmp, callback: TrainerCallback | None = None) -> float:
    setup = nodes.training_setup(params)
    model = nodes.model_with_adapter(ref, params, SEED, setup)
    timer = StepTimer()
    trainer = nodes.build_trainer(
        model, models.load_tokenizer(ref), nodes.training_data(frame), params, Path(tmp) / "project",
        SEED, setup, "project", callbacks=[timer, *([callback] if callback else [])],
    )
    trainer.train()
    return timer.seconds()


#: Where the time of a training step goes, by operator (self CPU time; backward ops included).
PROFILE_GROUPS = {
    "matmul (linear layers, LoRA, LM head)": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "attention (SDPA kernels)": ("scaled_dot_product", "flash_attention"),
    "optimizer (AdamW)": ("_foreach", "_fused_adam", "aten::lerp", "aten::addcdiv", "aten::addcmul", "aten::sqrt"),
}


def profile_project(ref, frame, params, tmp) -> list[str]:
    """One more project run under torch.profiler: the share of step time per operator group,
    and the top operators."""
    profiler = StepProfiler()
    run_project(ref, frame, params, tmp, profiler)
    events = [e for e in profiler.profiler.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    shares = {group: 0.0 for group in PROFILE_GROUPS}
    for event in events:
        group = next((g for g, keys in PROFILE_GROUPS.items() if any(k in event.key for k in keys)), None)
        if group:
            shares[group] += event.self_cpu_time_total / total
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]
    rest = 1 - sum(shares.values())
    return [
        "Profile of the project's timed steps (torch.profiler, self CPU time): "
        + ", ".join(f"{g} {v:.0%}" for g, v in shares.items())
        + f", everything else (elementwise ops, copies, casts, Python and framework overhead) {rest:.0%}. "
        + "Top operators: " + ", ".join(f"{e.key} {e.self_cpu_time_total / total:.0%}" for e in top) + ".",
    ]


def run_trl(ref, frame, params, tmp, **overrides) -> float:
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    model = models.load_causal_lm(ref, device="cpu")
    settings = {"max_length": params.max_length, "bf16": False, **overrides}  # fp32 unless asked
    config = SFTConfig(
        output_dir=str(Path(tmp) / "trl"),
        max_steps=params.max_steps,
        per_device_train_batch_size=params.batch_size,
        learning_rate=params.learning_rate,
        lr_scheduler_type=params.lr_scheduler,
        warmup_steps=params.warmup_ratio,
        use_cpu=True,
        seed=SEED,
        train_sampling_strategy="sequential",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        **settings,
    )
    lora = LoraConfig(
        r=params.lora.r, lora_alpha=params.lora.alpha, lora_dropout=params.lora.dropout,
        target_modules=params.lora.target_modules, task_type="CAUSAL_LM",
    )
    timer = StepTimer()
    trainer = SFTTrainer(
        model=model, args=config, processing_class=models.load_tokenizer(ref), peft_config=lora,
        train_dataset=nodes.training_data(frame), callbacks=[timer],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return timer.seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="both_instructions")
    parser.add_argument("--steps", type=int, default=4, help="timed steps (plus one warm-up)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", default="auto", help="CPU threads for every run, or auto")
    parser.add_argument("--runs", default="project,trl-best,trl-defaults,project-bf16,trl-best-bf16")
    parser.add_argument("--out", help="the record's path (default docs/results/bench/training.json)")
    parser.add_argument("--profile", action="store_true", help="also profile one project run (torch.profiler)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from datasets.utils.logging import disable_progress_bar
    from transformers import AutoConfig

    disable_progress_bar()
    threads = use_cpu_threads(args.threads if args.threads == "auto" else int(args.threads))
    steps = args.steps + 1
    params = bench_params(threads, steps)
    bf16_params = params.model_copy(update={"sft": {**params.sft, "bf16": True}})
    ref = common.model_ref()
    tokenizer = models.load_tokenizer(ref)
    frame = common.latest_model_input(f"{args.variant}/training_set.jsonl")
    # every configuration gets exactly the examples that fit, in the same order
    encoded = [chat.tokenize_example(tokenizer, p, c) for p, c in zip(frame["prompt"], frame["completion"], strict=True)]
    fits = [len(e["input_ids"]) <= params.max_length for e in encoded]
    frame = frame[fits].head(steps * params.batch_size).reset_index(drop=True)
    timed = [e for e, ok in zip(encoded, fits, strict=True) if ok][params.batch_size : steps * params.batch_size]
    cfg = AutoConfig.from_pretrained(ref)
    lora_params = sum(
        p.numel() for p in nodes.add_lora(models.load_causal_lm(ref, device="cpu"), params, SEED, False).parameters()
        if p.requires_grad
    )
    flops = sum(
        flops_per_example(cfg, lora_params, len(e["input_ids"]), sum(e["completion_mask"][1:])) for e in timed
    )
    useful = sum(len(e["input_ids"]) for e in timed)
    common.say(f"threads={threads} batch={params.batch_size} LoRA r={params.lora.r} "
               f"({lora_params / 1e6:.2f} M trainable) variant={args.variant}: {useful} timed tokens")
    peaks = {"fp32": matmul_peak(threads), "bf16": matmul_peak(threads, dtype=torch.bfloat16)}
    common.say(f"matmul peak: {peaks['fp32']:.1f} GFLOP/s fp32, {peaks['bf16']:.1f} bf16")

    with tempfile.TemporaryDirectory() as tmp:
        runners = {
            "project": lambda: run_project(ref, frame, params, tmp),
            "trl-best": lambda: run_trl(ref, frame, params, tmp, **TRL_BEST),
            "trl-defaults": lambda: run_trl(ref, frame, params, tmp),
            "project-bf16": lambda: run_project(ref, frame, bf16_params, tmp),
            "trl-best-bf16": lambda: run_trl(ref, frame, params, tmp, **{**TRL_BEST, "bf16": True}),
        }
        runners = {name: runners[name] for name in args.runs.split(",")}
        seconds = common.interleaved(runners, args.repeats)
        profile = profile_project(ref, frame, params, tmp) if args.profile else []
    # the machine may be quieter now: the higher peak (the harder target)
    peaks = {"fp32": max(peaks["fp32"], matmul_peak(threads)),
             "bf16": max(peaks["bf16"], matmul_peak(threads, dtype=torch.bfloat16))}
    common.say(f"matmul peak, the higher of two measurements: {peaks['fp32']:.1f} GFLOP/s fp32, {peaks['bf16']:.1f} bf16")

    labels = {
        "project": "project (pipeline: SFTTrainer, padding-free, attention per example)",
        "trl-best": "TRL SFTTrainer: padding_free, completion-only, nll, max_length=None, no checkpointing",
        "trl-defaults": "TRL SFTTrainer: remaining defaults (padded, gradient checkpointing)",
        "project-bf16": "project, training.sft.bf16: true (fp32 weights)",
        "trl-best-bf16": "TRL at its best (as above), bf16=True (TRL's default precision)",
    }
    rates = {name: [useful / s for s in values] for name, values in seconds.items()}
    examples = f"{args.variant}, {len(timed)} examples in {args.steps} timed steps of {params.batch_size}"
    cases = []
    for precision, reference in (("fp32", "project"), ("bf16 autocast", "project-bf16")):
        names = [n for n in rates if n.endswith("bf16") == (precision != "fp32")]
        rows = []
        for name in names:
            gflops = [flops / s / 1e9 for s in seconds[name]]
            peak = peaks["bf16" if name.endswith("bf16") else "fp32"]
            rows.append(common.row(
                labels[name], rates[name], rates.get(reference) if name != reference else None,
                model_gflops_per_s=common.spread(gflops), fraction_of_peak=common.spread([g / peak for g in gflops]),
            ))
            common.say(f"{name:13s} useful tokens/s min {min(rates[name]):.1f} max {max(rates[name]):.1f}; "
                       f"of peak {max(gflops) / peak:.0%} best")
        if rows:
            cases.append({
                "case": f"{examples}, {precision}", "rows": rows,
                "checks": f"same examples, order, batch, LoRA settings and precision ({precision}) in every "
                f"configuration; speed-up against {reference}",
            })
    shares = {
        name: common.spread([flops / s / 1e9 / peaks["bf16" if name.endswith("bf16") else "fp32"] for s in values])
        for name, values in seconds.items() if name.startswith("project")
    }
    gain = []
    if {"project", "project-bf16"} <= rates.keys():
        g = common.spread([b / f for b, f in zip(rates["project-bf16"], rates["project"], strict=True)])
        gain.append("bf16 autocast against fp32, the project's own rate repeat by repeat (min / median / max): "
                    f"{g['min']:.2f}x / {g['median']:.2f}x / {g['max']:.2f}x.")
    common.write_record("training", {
        "title": "LoRA training throughput",
        "machine": common.machine(threads),
        "repeats": args.repeats,
        "unit": "useful tokens/s",
        "peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
        "cases": cases,
        "notes": [
            f"Matmul peak with {threads} thread(s), measured before and after (the higher): "
            f"{peaks['fp32']:.1f} GFLOP/s fp32, {peaks['bf16']:.1f} GFLOP/s bf16. Model FLOP/s as a share of "
            "the peak of the run's precision (min / median / max): "
            + "; ".join(f"{name} {v['min']:.0%} / {v['median']:.0%} / {v['max']:.0%}" for name, v in shares.items())
            + ".",
            *gain,
            *profile,
        ],
    }, args.out)


if __name__ == "__main__":
    main()
