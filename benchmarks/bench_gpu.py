"""QLoRA training and generation speed of a Llama-2-7B-shaped model on one GPU, with the
`conf/llama2` settings.

Random weights, no Hub: Llama-2-7B's published shapes (``benchmarks/size_llama2.py``) are
built with random bf16 weights on the device, saved to a temporary directory and loaded back
through the pipeline's own ``models.load_causal_lm(path, "4bit")`` (NF4, double quantization,
bf16 compute). The pipeline's ``nodes.add_lora`` adds LoRA with ``conf/llama2``'s settings
(r=64 on seven projections; ``prepare_model_for_kbit_training`` with gradient checkpointing),
and ``nodes.batch_plan`` gives one GPU's micro-batch and accumulation (4 x 12 = 48 sequences
per optimizer step). Training examples are random token ids with the prompt and completion
lengths of the templated llama2 training data (``benchmarks/llama2_token_lengths.json``,
written by ``--write-lengths``), with the loss on completion tokens only.

Steps are timed through the training pipeline's own trainer (``nodes.build_trainer``: TRL's
SFTTrainer with padding-free batches, the LM head at loss tokens only, the pipeline's
per-example attention, bf16 on the GPU, the llama2 optimizer settings), on a dataset that is
already token ids (TRL uses it as it is; a three-token tokenizer supplies the padding id).
Model FLOPs per example are ``bench_training.flops_per_example`` (forward
and input-gradient backward through the frozen base, 6 N for the LoRA weights, causal
attention, the LM head at loss tokens; gradient checkpointing's recomputation not counted);
MFU is their rate over the dense matmul peak measured first, in the same run and dtype.
Generation: the reporting pipeline's own decode loop (``generation.generate_ids``, which
``generation.generate`` runs: prefill in length groups, the KV cache; greedy, no stop token,
so every row makes exactly ``--new-tokens``) on random prompts of the data's prompt lengths,
for the freshly loaded 4-bit base and for base + the trained adapter
(``PeftModel.from_pretrained``, as the reporting pipeline loads adapters).

Estimated phases on one H100 (estimates, not measured): random init 10-20 s, save 20-40 s,
4-bit load 20-60 s, peak 10 s, training 1 + 20 steps of 48 sequences 60-200 s, reload
20-60 s, generation 20-40 s: about 3-7 minutes. Each phase's time is in the output.

    python benchmarks/bench_gpu.py --out docs/results/bench/gpu.json   # on a GPU
    python benchmarks/bench_gpu.py --tiny                              # the same path, tiny, CPU
    python benchmarks/bench_gpu.py --write-lengths                     # needs data/05_model_input

Progress goes to stderr; stdout gets one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bench_training import flops_per_example  # noqa: E402
from common import latest_model_input, machine, model_ref, write_record  # noqa: E402
from size_llama2 import LLAMA2_7B, llama2_training_params  # noqa: E402

LENGTHS = ROOT / "benchmarks/llama2_token_lengths.json"
VARIANTS = ("custom_only", "both_instructions")
SEED = 0
#: The --tiny model: Llama's architecture at toy size, for the CPU.
TINY = {
    "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
}


def log(line: str) -> None:
    sys.stderr.write(f"[bench_gpu] {line}\n")
    sys.stderr.flush()


# --- token lengths of the templated llama2 data ------------------------------------------------


def llama2_conf() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((ROOT / "conf/llama2/parameters_training.yml").read_text())


def lengths_tokenizer() -> tuple[Any, str, bool]:
    """Llama-2's tokenizer if the local Hub cache has it, else the embedded SmolLM2's as a
    stand-in; either with conf/llama2's chat template. Returns (tokenizer, name, is_llama2)."""
    from transformers import AutoTokenizer

    from mift_kedro import chat, models

    base = llama2_conf()["base_model"]
    template = (ROOT / base["chat_template"]).read_text()
    # the revision the pipeline loads: base_model.revision, else the name's pinned revision
    revision = base.get("revision") or (base.get("pinned_revisions") or {}).get(base["name"])
    try:
        tokenizer = AutoTokenizer.from_pretrained(base["name"], revision=revision, local_files_only=True)
        name, is_llama2 = f"{base['name']}@{revision}", True
    except OSError:
        tokenizer = models.load_tokenizer(model_ref())
        name, is_llama2 = f"{models.EMBEDDED_GGUF} (stand-in: no Llama-2 tokenizer in the local Hub cache)", False
    tokenizer.chat_template = template  # Llama-2-chat's rendering, whatever the tokenizer
    chat.match_meta_inst_tokenization(tokenizer)  # as models.load_tokenizer does for Llama-2
    return tokenizer, name, is_llama2


def write_lengths() -> dict[str, Any]:
    """Prompt and completion tokens per example of each llama2 variant's training set, rendered
    and tokenized as the training pipeline does (``chat.tokenize_example``)."""
    from mift_kedro import chat

    tokenizer, name, is_llama2 = lengths_tokenizer()
    record: dict[str, Any] = {
        "what": "prompt and completion tokens per example of data/05_model_input/<variant>/training_set.jsonl "
        "(the offline sample), rendered with conf/llama2/chat_template_llama2.jinja",
        "command": "python benchmarks/bench_gpu.py --write-lengths",
        "tokenizer": name,
        "tokenizer_is_llama2": is_llama2,
        "variants": {},
    }
    for variant in VARIANTS:
        frame = latest_model_input(f"{variant}/training_set.jsonl")
        prompt, completion = [], []
        for p, c in zip(frame["prompt"], frame["completion"], strict=True):
            mask = chat.tokenize_example(tokenizer, p, c)["completion_mask"]
            prompt.append(mask.count(0))
            completion.append(mask.count(1))
        record["variants"][variant] = {"prompt": prompt, "completion": completion}
    # indented, but each list of numbers on one line
    text = re.sub(r"\[[\d,\s]*\]", lambda m: json.dumps(json.loads(m.group())), json.dumps(record, indent=1))
    LENGTHS.write_text(text + "\n")
    log(f"wrote {LENGTHS.relative_to(ROOT)} ({name})")
    return record


def example_lengths(variant: str, max_length: int) -> tuple[list[tuple[int, int]], dict[str, Any]]:
    """(prompt, completion) lengths of the variant's examples that fit ``max_length`` (the
    llama2 ``overlong: drop``), and what they are."""
    if not LENGTHS.is_file():
        sys.exit(f"No {LENGTHS.relative_to(ROOT)}: run `python benchmarks/bench_gpu.py --write-lengths` first.")
    record = json.loads(LENGTHS.read_text())
    if variant not in record["variants"]:
        sys.exit(f"--variant {variant!r}: {LENGTHS.name} has {sorted(record['variants'])}")
    data = record["variants"][variant]
    pairs = list(zip(data["prompt"], data["completion"], strict=True))
    fits = [(p, c) for p, c in pairs if p + c <= max_length]
    return fits, {
        "file": str(LENGTHS.relative_to(ROOT)), "variant": variant, "tokenizer": record["tokenizer"],
        "tokenizer_is_llama2": record["tokenizer_is_llama2"], "examples": len(pairs),
        "dropped_overlong": len(pairs) - len(fits),
        "mean_prompt_tokens": round(statistics.mean(p for p, _ in fits), 1),
        "mean_completion_tokens": round(statistics.mean(c for _, c in fits), 1),
    }


# --- batches -----------------------------------------------------------------------------------


class Examples:
    """An endless shuffled stream of (prompt, completion) lengths, epoch after epoch (seeded)."""

    def __init__(self, lengths: list[tuple[int, int]], seed: int) -> None:
        self.lengths, self.rng, self.queue = lengths, random.Random(seed), []

    def take(self, n: int) -> list[tuple[int, int]]:
        while len(self.queue) < n:
            epoch = list(self.lengths)
            self.rng.shuffle(epoch)
            self.queue += epoch
        taken, self.queue = self.queue[:n], self.queue[n:]
        return taken


def id_tokenizer() -> Any:
    """A tokenizer for data that is already token ids: TRL reads only its special tokens
    (padding). No Llama tokenizer is at hand offline, and none is needed for random ids."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")),
        unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>",
    )


def training_examples(lengths: list[tuple[int, int]], vocab: int, generator: Any) -> list[dict[str, list[int]]]:
    """Random token ids of these (prompt, completion) lengths, tokenized as TRL's data preparation
    leaves them: ``input_ids`` and a ``completion_mask`` (TRL uses such a dataset as it is)."""
    import torch

    return [
        {"input_ids": torch.randint(3, vocab, (p + c,), generator=generator).tolist(), "completion_mask": [0] * p + [1] * c}
        for p, c in lengths
    ]


def prompt_ids(lengths: list[int], vocab: int, generator: Any) -> list[list[int]]:
    """Random prompts (token ids) of these lengths."""
    import torch

    return [torch.randint(3, vocab, (n,), generator=generator).tolist() for n in lengths]


# --- device measurements -----------------------------------------------------------------------


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def matmul_peak(device: str, dtype: Any, seconds: float) -> dict[str, Any]:
    """Best dense matmul FLOP/s of square ``dtype`` matrices on ``device`` (the CPU's through
    bench_training's measurement, at torch's current thread count)."""
    import torch

    if not device.startswith("cuda"):
        from bench_training import matmul_peak as cpu_peak

        return {"dtype": str(dtype).removeprefix("torch."), "flops_per_s": cpu_peak(torch.get_num_threads(), seconds, dtype) * 1e9}
    best, sizes = 0.0, (4096, 8192, 16384)
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        sync(device)
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / len(sizes):
            a @ b
            reps += 1
            if reps % 10 == 0:
                sync(device)
        sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
        del a, b
    return {"dtype": str(dtype).removeprefix("torch."), "sizes": list(sizes), "flops_per_s": best}


def peak_memory(device: str) -> int | None:
    import torch

    return int(torch.cuda.max_memory_allocated(device)) if device.startswith("cuda") else None


def reset_peak_memory(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# --- the phases --------------------------------------------------------------------------------


def save_random_model(config: dict[str, Any], directory: Path, device: str) -> None:
    """A random-weight Llama of ``config``, built on ``device`` in bf16 and saved."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(SEED)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**config), dtype=torch.bfloat16)
    model.save_pretrained(directory)
    del model


def train(model: Any, params: Any, setup: Any, stream: Examples, vocab: int, workdir: Path,
          warmup: int, steps: int) -> tuple[Any, dict[str, Any]]:
    """``warmup`` untimed then ``steps`` timed optimizer steps of the training pipeline's own
    trainer (``nodes.build_trainer``: TRL's SFTTrainer, padding-free batches, the LM head at
    loss tokens, attention per example), examples in order."""
    import torch
    from bench_training import StepTimer
    from datasets import Dataset

    from mift_kedro.pipelines.training import nodes

    plan = setup.batches
    per_step = plan.per_process_batch_size * plan.gradient_accumulation_steps
    lengths = stream.take(per_step * (warmup + steps))
    generator = torch.Generator().manual_seed(SEED)
    dataset = Dataset.from_list(training_examples(lengths, vocab, generator))
    params = params.model_copy(update={
        "max_steps": warmup + steps, "save_steps": 10**6,
        "sft": {**params.sft, "train_sampling_strategy": "sequential"},
    })
    timer = StepTimer(skip=warmup)
    trainer = nodes.build_trainer(model, id_tokenizer(), dataset, params, workdir / "trainer", SEED, setup, "bench_gpu",
                                  callbacks=[timer])
    trainer.train()
    timed = lengths[per_step * warmup:]
    cfg = model.get_base_model().config
    lora_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return trainer.model, {
        "warmup_steps": warmup, "timed_steps": steps, "sequences": len(timed),
        "tokens": sum(p + c for p, c in timed), "completion_tokens": sum(c for _, c in timed),
        "model_flops": sum(flops_per_example(cfg, lora_params, p + c, c) for p, c in timed),
        "seconds": round(timer.seconds(), 3), "lora_parameters": lora_params,
        "loss_first": losses[0], "loss_last": losses[-1], "losses": losses,
    }


def generate(model: Any, prompts: list[list[list[int]]], new_tokens: int, device: str) -> dict[str, Any]:
    """The reporting pipeline's own decode loop (``generation.generate_ids``: prefill in
    length groups, KV cache, finished rows leave the batch), greedy, on batches of prompts,
    exactly ``new_tokens`` per row (no stop token); the first batch is a short untimed warm-up."""
    from mift_kedro.pipelines.reporting.generation import generate_ids

    def run(batch: list[list[int]], tokens: int) -> list[list[int]]:
        return generate_ids(model, batch, max_new_tokens=tokens, batch_size=len(batch), eos_ids=[], pad_id=0,
                            progress=False)

    run(prompts[0], 2)
    rates, generated, seconds = [], 0, 0.0
    for batch in prompts:
        sync(device)
        start = time.perf_counter()
        out = run(batch, new_tokens)
        sync(device)
        took = time.perf_counter() - start
        made = sum(len(tokens) for tokens in out)
        if made != new_tokens * len(batch):
            raise RuntimeError(f"the decode loop made {made} tokens, expected {new_tokens * len(batch)}")
        rates.append(made / took)
        generated, seconds = generated + made, seconds + took
    return {"new_tokens": generated, "seconds": round(seconds, 3), "tokens_per_s": generated / seconds,
            "per_batch_tokens_per_s": [round(r, 2) for r in rates]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from peft import PeftModel

    from mift_kedro import models
    from mift_kedro.pipelines.training import nodes
    from mift_kedro.pipelines.training.trainer import register_packed_attention
    from mift_kedro.threads import use_cpu_threads

    phases: dict[str, float] = {}
    clock = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = round(now - clock, 2)
        log(f"phase {name}: {phases[name]:.1f} s")
        clock = now

    params = llama2_training_params()
    if params.quantization != "4bit":
        sys.exit("bench_gpu measures QLoRA: conf/llama2 training.quantization must be 4bit")
    device = models.default_device()
    # --tiny: one thread (a toy model gains nothing from more, and loses much on a busy machine)
    threads = use_cpu_threads(1 if args.tiny else params.torch_threads, device)
    # "auto" means on for GPUs: this benchmark is the GPU path, so --tiny keeps it on too
    checkpointing = True if params.gradient_checkpointing == "auto" else params.gradient_checkpointing
    setup = nodes.training_setup(params)._replace(gradient_checkpointing=checkpointing, threads=threads)
    if args.accumulation:
        setup = setup._replace(batches=setup.batches._replace(gradient_accumulation_steps=args.accumulation))
    plan = setup.batches
    config = TINY if args.tiny else LLAMA2_7B
    vocab = config["vocab_size"]
    lengths, lengths_info = example_lengths(args.variant, params.max_length)
    log(f"token lengths of {lengths_info['file']}, tokenized with {lengths_info['tokenizer']}")
    dtype = models.compute_dtype(device)
    log(f"{'tiny' if args.tiny else 'Llama-2-7B-shaped'} model on {device} ({dtype}); {plan}")

    peak = matmul_peak(device, dtype, args.peak_seconds)
    phase("matmul_peak")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        model_dir, adapter_dir = Path(tmp) / "model", Path(tmp) / "adapter"
        save_random_model(config, model_dir, device)
        phase("random_init_and_save")
        reset_peak_memory(device)
        model = models.load_causal_lm(str(model_dir), params.quantization, device)
        phase("load_4bit")
        model.set_attn_implementation(register_packed_attention())  # as nodes.model_with_adapter
        model = nodes.add_lora(model, params, SEED, checkpointing)
        phase("add_lora")
        model, training = train(model, params, setup, Examples(lengths, SEED), vocab, Path(tmp), args.warmup, args.steps)
        training["peak_memory_bytes"] = peak_memory(device)
        phase("training")
        model.save_pretrained(adapter_dir)
        del model
        reset_peak_memory(device)
        base = models.load_causal_lm(str(model_dir), params.quantization, device).eval()
        phase("save_adapter_and_reload_4bit")
        generator = torch.Generator().manual_seed(SEED + 1)
        stream = Examples(lengths, SEED + 1)
        prompts = [
            prompt_ids([p for p, _ in stream.take(args.gen_batch)], vocab, generator) for _ in range(args.gen_batches)
        ]
        base_rates = generate(base, prompts, args.new_tokens, device)
        phase("generation_base")
        adapter = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False).eval()
        adapter_rates = generate(adapter, prompts, args.new_tokens, device)
        phase("generation_adapter")
        generation_peak = peak_memory(device)
        lora = adapter.peft_config["default"]
        applied = base.config.quantization_config  # what the loaded model holds
        quantized = {key: str(getattr(applied, f"bnb_4bit_{key}")).removeprefix("torch.")
                     for key in ("quant_type", "use_double_quant", "compute_dtype")}

    seconds = training["seconds"]
    flops_per_s = training["model_flops"] / seconds
    sequences_per_s = training["sequences"] / seconds
    return {
        "benchmark": "gpu",
        "what": "QLoRA training and batched generation of a Llama-2-7B-shaped model, random weights, conf/llama2 settings",
        "mode": "tiny (toy model, same code path)" if args.tiny else "Llama-2-7B shapes",
        "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
        "machine": machine(threads),
        "model": {**config, "weights": "random (seed 0), saved in bf16, loaded in 4-bit"},
        "settings": {
            "source": "conf/llama2/parameters_training.yml",
            "quantization": params.quantization,
            "bnb_4bit": quantized,
            "lora": {"r": lora.r, "alpha": lora.lora_alpha, "dropout": lora.lora_dropout,
                     "target_modules": sorted({name.rsplit(".", 1)[-1] for name in lora.target_modules})},
            "compute_dtype": str(dtype).removeprefix("torch."),
            "micro_batch_size": plan.per_process_batch_size,
            "gradient_accumulation_steps": plan.gradient_accumulation_steps,
            "sequences_per_optimizer_step": plan.per_process_batch_size * plan.gradient_accumulation_steps,
            "max_length": params.max_length,
            "gradient_checkpointing": checkpointing,
            "attention": "the pipeline's packed SDPA (per example)",
            "batches": "padding-free (TRL), loss on completion tokens only, LM head at loss tokens only",
            "optimizer": f"the pipeline's: AdamW lr={params.learning_rate} ({params.lr_scheduler}), weight_decay="
            f"{params.weight_decay}, gradient clipping at {params.max_grad_norm}",
            "loop": "the training pipeline's trainer (nodes.build_trainer: TRL SFTTrainer)",
        },
        "lengths": lengths_info,
        "matmul_peak": peak,
        "training": {
            **{k: v for k, v in training.items() if k != "losses"},
            "tokens_per_s": training["tokens"] / seconds,
            "completion_tokens_per_s": training["completion_tokens"] / seconds,
            "sequences_per_s": sequences_per_s,
            "model_flops_per_s": flops_per_s,
            "mfu": flops_per_s / peak["flops_per_s"],
            "flops_counting": "benchmarks/bench_training.py flops_per_example over the real tokens: "
            "gradient checkpointing's recomputation not counted",
            "computed_8000_examples_s": 8000 / sequences_per_s,
            "losses": [round(v, 4) for v in training["losses"]],
        },
        "generation": {
            "batch_size": args.gen_batch, "batches": args.gen_batches, "max_new_tokens": args.new_tokens,
            "how": "the reporting pipeline's decode loop (generation.generate_ids), greedy, random prompts "
            "of the data's prompt lengths (no shared prefix), exactly max_new_tokens per prompt; freshly "
            "loaded 4-bit base, then PeftModel.from_pretrained",
            "base": base_rates, "adapter": adapter_rates, "peak_memory_bytes": generation_peak,
        },
        "phases_s": phases,
        "total_s": round(sum(phases.values()), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a toy Llama on this device (CPU): the test's mode")
    parser.add_argument("--write-lengths", action="store_true", help=f"write {LENGTHS.name} from data/05_model_input")
    parser.add_argument("--variant", default="both_instructions", choices=VARIANTS, help="whose lengths to draw")
    parser.add_argument("--steps", type=int, help="timed optimizer steps (default 20; --tiny 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    parser.add_argument("--accumulation", type=int, help="micro-batches per step (default: the llama2 plan on "
                        "one GPU; --tiny 2)")
    parser.add_argument("--gen-batch", type=int, help="prompts per generate call (default 16; --tiny 4)")
    parser.add_argument("--gen-batches", type=int, help="timed generate calls (default 3; --tiny 1)")
    parser.add_argument("--new-tokens", type=int, help="tokens generated per prompt (default 64; --tiny 8)")
    parser.add_argument("--peak-seconds", type=float, help="matmul peak measurement (default 6; --tiny 1)")
    parser.add_argument("--workdir", help="where the random model is saved (default: the system's temp dir)")
    parser.add_argument("--out", help="also write the JSON record here (e.g. docs/results/bench/gpu.json)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.write_lengths:
        write_lengths()
        return
    defaults = {"steps": (20, 2), "accumulation": (None, 2), "gen_batch": (16, 4), "gen_batches": (3, 1),
                "new_tokens": (64, 8), "peak_seconds": (6.0, 1.0)}
    for key, (full, tiny) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else full)
    result = run(args)
    if not math.isfinite(result["training"]["loss_last"]):
        log("the training loss is not finite")
    if args.out:
        with contextlib.redirect_stdout(sys.stderr):
            write_record("gpu", result, args.out)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
