"""training: one LoRA (QLoRA with ``quantization: 4bit``) adapter per variant.

Read :func:`train_adapter` top to bottom: it is a training run, in the order of TRL's
``sft.py`` script (setup, tokenizer, data, checkpoint location, model and adapter, trainer,
train, metrics), on TRL's ``SFTTrainer``; each step is a function of its own, callable
without Kedro.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from mift_kedro import chat, models
from mift_kedro.config import ParameterError, seed_display_name, variant_spec
from mift_kedro.pipelines.training.params import TrainingParams, base_model_params, training_params

logger = logging.getLogger(__name__)


def prepare_base_model(
    base_model: dict[str, Any], cache_dir: str | None = None
) -> models.ModelSource | models.ConvertedModel:
    """Check the configured base model can be had, in seconds, before any training starts;
    convert the embedded GGUF model into a safetensors directory (once per machine, in
    ``cache_dir``, default :func:`mift_kedro.models.conversions_dir`; ~40 s the first time).

    The ``base_model`` dataset writes what this returns: the converted directory with its
    record, or only the record of a Hub id (with its revision) or a local directory. The chat
    template file's text goes into the record, so every later load of the tokenizer
    (training, adapters, reporting) gets it.
    """
    params = base_model_params(base_model)
    if params.revision and params.source != "hub":
        logger.warning("base_model.revision=%s is ignored: it applies to source: hub only", params.revision)
    source = params.model_source()
    if params.source != "embedded":
        models.check_model_available(params.name, source.revision)
        return source
    models.embedded_gguf(params.name)  # names the files there before any work
    return models.ConvertedModel(source, _convert_once(params.name, cache_dir))


def _convert_once(gguf_file: str, cache_dir: str | None) -> Path:
    """Under ``accelerate launch`` every process runs the node: the first process of each
    machine converts, the others then find its conversion."""
    from mift_kedro.distributed import distributed_state, is_distributed

    if not is_distributed():
        return models.converted_embedded(gguf_file, cache_dir)
    with distributed_state().local_main_process_first():
        return models.converted_embedded(gguf_file, cache_dir)


# --- data ------------------------------------------------------------------------------------


class BatchPlan(NamedTuple):
    """How the sequences of one optimizer step are split over processes and accumulation."""

    effective_batch_size: int
    num_processes: int
    per_process_batch_size: int  # sequences per process per forward pass
    gradient_accumulation_steps: int


def batch_plan(params: TrainingParams, num_processes: int) -> BatchPlan:
    """Keep ``training.effective_batch_size`` whatever the process count: accumulation adapts.

    Each process takes ``effective_batch_size / num_processes`` sequences per optimizer step,
    in micro-batches of ``training.batch_size`` or, where that does not divide its share, of
    the largest divisor below it. So runs on 1, 3 or 8 GPUs take the same optimizer steps.
    """
    effective = params.effective_batch_size
    if effective % num_processes:
        fits = [n for n in range(1, effective + 1) if effective % n == 0]
        below, above = effective // num_processes * num_processes, -(-effective // num_processes) * num_processes
        multiples = " or ".join(str(m) for m in (below, above) if m > 0)
        raise ParameterError(
            f"training.effective_batch_size={effective} sequences per optimizer step cannot be split "
            f"evenly over {num_processes} processes. Set training.effective_batch_size to a multiple "
            f"of {num_processes} (e.g. {multiples}), or launch a process count that divides "
            f"{effective} (accelerate launch --num_processes N, N in {fits})."
        )
    share = effective // num_processes
    micro = max(d for d in range(1, min(params.batch_size, share) + 1) if share % d == 0)
    if micro < min(params.batch_size, share):
        logger.warning(
            "%d sequences per process per step do not split into micro-batches of "
            "training.batch_size=%d: using %d x %d accumulation steps (a training.effective_batch_size "
            "divisible by %d x %d keeps full micro-batches)",
            share, params.batch_size, micro, share // micro, num_processes, params.batch_size,
        )
    return BatchPlan(effective, num_processes, micro, share // micro)


def fingerprint(*parts: Any) -> str:
    """A short hash of everything that determines a training run (for its checkpoint dir)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, pd.DataFrame):
            part = part.to_json(orient="records", force_ascii=False)
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:12]


# --- model -----------------------------------------------------------------------------------


def add_lora(model: Any, params: TrainingParams, seed: int, gradient_checkpointing: bool) -> Any:
    """Wrap the (possibly 4-bit) base in a LoRA adapter; seeded first, so runs repeat."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    if params.quantization == "4bit":
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},  # DDP-safe
        )
    set_seed(seed)
    lora = LoraConfig(
        r=params.lora.r,
        lora_alpha=params.lora.alpha,
        lora_dropout=params.lora.dropout,
        target_modules=params.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def sft_config(
    params: TrainingParams,
    output_dir: Path,
    seed: int,
    device: str,
    gradient_checkpointing: bool,
    batches: BatchPlan | None = None,
) -> Any:
    """TRL's ``SFTConfig``: precision by device (fp32 on CPU), padding-free batches, loss on the
    response, checkpoints for resuming; ``batches`` defaults to one process's plan. Any other
    SFTConfig option comes from ``training.sft`` (checked by TRL itself)."""
    import torch
    from trl import SFTConfig

    dtype = models.compute_dtype(device)
    batches = batches or batch_plan(params, 1)
    try:
        return SFTConfig(
            output_dir=str(output_dir),
            num_train_epochs=params.epochs,
            max_steps=params.max_steps or -1,
            per_device_train_batch_size=batches.per_process_batch_size,
            gradient_accumulation_steps=batches.gradient_accumulation_steps,
            learning_rate=params.learning_rate,
            lr_scheduler_type=params.lr_scheduler,
            warmup_steps=params.warmup_ratio,
            weight_decay=params.weight_decay,
            max_grad_norm=params.max_grad_norm,
            use_cpu=device == "cpu",
            activation_checkpointing=gradient_checkpointing,
            activation_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
            seed=seed,
            data_seed=seed,
            padding_free=True,  # one row per batch, boundaries for packed_sdpa_attention
            completion_only_loss=True,
            max_length=None,  # the overlong policy applies training.max_length (VariantSFTTrainer)
            logging_steps=1,
            save_strategy="steps",
            save_steps=params.save_steps,
            save_total_limit=1,
            report_to="none",
            disable_tqdm=True,  # TrainingProgress draws the bar
            include_num_input_tokens_seen="all",  # padding-free batches: every token is useful
            ddp_find_unused_parameters=False,
            # defaults that training.sft may override
            **{"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16, "dataloader_num_workers": 0,
               **params.sft},
        )
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"training.sft is not a valid SFTConfig: {exc}") from exc


# --- the steps of a training run ---------------------------------------------------------------


class Setup(NamedTuple):
    """How this process trains: its share of the batch, its device and CPU threads."""

    state: Any  # accelerate's process state (one process, or a rank of `accelerate launch`)
    batches: BatchPlan
    device: str
    gradient_checkpointing: bool
    threads: int | None  # torch's CPU threads; None on a GPU


def training_setup(params: TrainingParams) -> Setup:
    """Processes, batch plan, device and threads; a process count that cannot split the batch
    fails here, before any work."""
    from mift_kedro.distributed import distributed_state
    from mift_kedro.threads import use_cpu_threads

    state = distributed_state()
    batches = batch_plan(params, state.num_processes)
    device = models.default_device()
    gradient_checkpointing = (
        device != "cpu" if params.gradient_checkpointing == "auto" else params.gradient_checkpointing
    )
    threads = use_cpu_threads(params.torch_threads, device)
    return Setup(state, batches, device, gradient_checkpointing, threads)


def training_data(training_set: pd.DataFrame, tokenizer: Any = None) -> Any:
    """The variant's conversations as a ``datasets.Dataset`` of ``prompt`` / ``completion``
    messages: TRL's conversational prompt-completion format, which it tokenizes itself. With
    ``tokenizer``, a system turn is laid out as its template takes one (:func:`chat.conform`),
    as generation lays it out."""
    from datasets import Dataset

    frame = training_set[["prompt", "completion"]]
    if tokenizer is not None:
        frame = frame.assign(prompt=[chat.conform(tokenizer, p) for p in frame["prompt"]])
    return Dataset.from_pandas(frame, preserve_index=False)


def checkpoint_location(
    params: TrainingParams, spec: Any, seed: int, base_model: str, training_set: pd.DataFrame, setup: Setup
) -> tuple[Path, str | None]:
    """The run's checkpoint directory and the checkpoint to resume from (None: start afresh).

    One directory per (parameters, variant, seed, base model, data, process count), so a
    rerun of the same configuration resumes; ``retrain`` asks for a fresh run of the same
    configuration, so it is not part of the key, and empties the directory first.
    """
    from transformers.trainer_utils import get_last_checkpoint

    from mift_kedro.distributed import remove_once

    run_id = fingerprint(
        params.model_dump(exclude={"retrain"}),
        {**spec.model_dump(), "training": {k: v for k, v in spec.training.items() if k != "retrain"}},
        seed, models.model_identity(base_model), training_set, setup.state.num_processes,
    )
    output_dir = Path(params.checkpoint_dir) / spec_name(spec) / run_id
    if params.retrain and remove_once(setup.state, output_dir):
        logger.info("[%s] retrain: true, starting afresh in %s", spec.display_name, output_dir)
    resume_from = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    return output_dir, resume_from


def model_with_adapter(base_model: str, params: TrainingParams, seed: int, setup: Setup) -> Any:
    """The base model (fp32 on CPU, 4-bit NF4 for QLoRA), attending per example in padding-free
    batches, wrapped in a seeded LoRA adapter; loaded once the memory of an earlier variant's
    model is free."""
    from mift_kedro.pipelines.training.trainer import register_packed_attention

    models.free_memory()  # the variant trained before this one in the same run
    model = models.load_causal_lm(base_model, params.quantization, setup.device)
    model.set_attn_implementation(register_packed_attention())  # attention per example
    return add_lora(model, params, seed, setup.gradient_checkpointing)


def build_trainer(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    params: TrainingParams,
    output_dir: Path,
    seed: int,
    setup: Setup,
    name: str,
    callbacks: list[Any] | None = None,
) -> Any:
    """TRL's trainer (it tokenizes the conversations through the chat template and builds
    padding-free batches with the loss on the response), the overlong policy, a progress bar."""
    from transformers import PrinterCallback

    from mift_kedro.pipelines.training.trainer import TrainingProgress, VariantSFTTrainer

    trainer = VariantSFTTrainer(
        model=model,
        args=sft_config(params, output_dir, seed, setup.device, setup.gradient_checkpointing, setup.batches),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[TrainingProgress(name), *(callbacks or [])],
        max_length=params.max_length,
        overlong=params.overlong,
        trainable_dtype=models.trainable_dtype(setup.device),
    )
    trainer.remove_callback(PrinterCallback)
    report = trainer.data_report
    if report["dropped_overlong"] or report["truncated"]:
        logger.warning(
            "[%s] %d example(s) longer than max_length=%d tokens: %d dropped, %d truncated",
            name, report["dropped_overlong"] + report["truncated"],
            params.max_length, report["dropped_overlong"], report["truncated"],
        )
    return trainer


def log_plan(
    trainer: Any, name: str, params: TrainingParams, setup: Setup, resume_from: str | None,
) -> None:
    """What is about to happen, in one line; and whether the checkpoint already finished it."""
    args, data_report = trainer.args, trainer.data_report
    num_examples = data_report["examples"]
    steps = args.max_steps if args.max_steps > 0 else _steps(trainer, num_examples)
    logger.info(
        "[%s] training on %d examples (%d dropped as too long), %d steps of %d sequences "
        "(%d process(es) x %d x %d accumulation steps), device %s%s, quantization %s, %s, LoRA r=%d%s",
        name, num_examples, data_report["dropped_overlong"], steps, *setup.batches, setup.device,
        f" ({setup.threads} threads)" if setup.threads else "", params.quantization,
        models.compute_dtype(setup.device), params.lora.r, f", resuming from {resume_from}" if resume_from else "",
    )
    if resume_from and checkpoint_step(resume_from) >= steps:
        logger.info(
            "[%s] already trained with these parameters and data (%s): reusing it without "
            "training (set training.retrain=true to train it again)", name, resume_from,
        )


def finished_adapter(trainer: Any) -> Any:
    """The trained adapter, ready for generation: the model's standard attention (batches with
    padding; eager for Gemma-2's soft-capping), eval mode."""
    adapter = trainer.model
    base = adapter.get_base_model()
    base.set_attn_implementation(models.standard_attention(base.config))
    adapter.eval()
    return adapter


# --- the node --------------------------------------------------------------------------------


def train_adapter(
    base_model: str,
    training_set: pd.DataFrame,
    variant: dict[str, Any],
    training: dict[str, Any],
    seed: int,
    callbacks: list[Any] | None = None,
    seed_in_name: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Fine-tune one variant with one training seed; return its LoRA adapter and its training
    metrics. ``seed`` sets the LoRA initialisation, data order and dropout (the data itself is
    the variant's); ``seed_in_name`` names the model "<display name> (seed <seed>)", as when a
    variant is trained with several seeds.

    Every process of an ``accelerate launch`` runs this (DDP); Kedro hooks let only the main
    process save. A rerun with the same parameters, data and seed resumes from the last
    checkpoint.
    """
    spec = variant_spec(variant)
    # the model's name; the checkpoint key keeps the variant's spec (the seed is in it)
    name = seed_display_name(spec.display_name, seed if seed_in_name else None)
    params = training_params(training, spec.training)
    setup = training_setup(params)

    tokenizer = models.load_tokenizer(base_model)
    dataset = training_data(training_set, tokenizer)
    output_dir, resume_from = checkpoint_location(params, spec, seed, base_model, training_set, setup)
    model = model_with_adapter(base_model, params, seed, setup)
    trainer = build_trainer(model, tokenizer, dataset, params, output_dir, seed, setup, name, callbacks)
    log_plan(trainer, name, params, setup, resume_from)

    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    wall_time = time.perf_counter() - start

    metrics = training_metrics(
        trainer.state, result.metrics, wall_time, name, params, trainer.data_report,
        base_model=base_model, seed=seed, device=setup.device, batches=setup.batches,
        threads=setup.threads, resumed_from=resume_from, checkpoint_dir=output_dir,
    )
    logger.info(
        "[%s] done in %.0f s: loss %.3f -> %.3f, %d tokens, %.0f tokens/s",
        name, wall_time, metrics["loss_start"], metrics["loss_end"], metrics["tokens_seen"], metrics["tokens_per_s"],
    )
    return finished_adapter(trainer), metrics


def spec_name(spec: Any) -> str:
    """A filesystem-safe folder name for the variant's checkpoints."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in spec.display_name)


def checkpoint_step(checkpoint: str | Path) -> int:
    """The optimizer step a Trainer checkpoint directory (``checkpoint-<step>``) was saved at."""
    return int(Path(checkpoint).name.rsplit("-", 1)[-1])


def _steps(trainer: Any, num_examples: int) -> int:
    import math

    per_step = trainer.args.per_device_train_batch_size * trainer.args.world_size
    per_epoch = math.ceil(math.ceil(num_examples / per_step) / trainer.args.gradient_accumulation_steps)
    return math.ceil(per_epoch * trainer.args.num_train_epochs)


def training_metrics(
    state: Any,
    train_metrics: dict[str, Any],
    wall_time: float,
    name: str,
    params: TrainingParams,
    data_report: dict[str, int],
    **context: Any,
) -> dict[str, Any]:
    """Loss per step, tokens seen, wall time and tokens/s, with what produced them."""
    history = [
        {"step": row["step"], "loss": row["loss"], "learning_rate": row.get("learning_rate"),
         "tokens_seen": row.get("num_input_tokens_seen")}
        for row in state.log_history
        if "loss" in row
    ]
    resumed_from = context.pop("resumed_from")
    tokens_before = 0
    if resumed_from:
        done = checkpoint_step(resumed_from)
        tokens_before = next((r["tokens_seen"] for r in history if r["step"] == done), 0) or 0
    tokens_this_run = state.num_input_tokens_seen - tokens_before
    return {
        "variant": name,
        "seed": context["seed"],
        "base_model": context["base_model"],
        "device": context["device"],
        **context["batches"]._asdict(),
        "cpu_threads": context["threads"],
        "quantization": params.quantization,
        **data_report,
        "max_length": params.max_length,
        "overlong": params.overlong,
        "steps": state.global_step,
        "epochs": params.epochs,
        "loss_start": history[0]["loss"] if history else None,
        "loss_end": history[-1]["loss"] if history else None,
        "loss_per_step": history,
        "tokens_seen": int(state.num_input_tokens_seen),
        "wall_time_s": round(wall_time, 2),
        "tokens_per_s": round(tokens_this_run / wall_time, 1) if wall_time else None,
        "train_runtime_s": train_metrics.get("train_runtime"),
        "resumed_from": str(resumed_from) if resumed_from else None,
        "checkpoint_dir": str(context["checkpoint_dir"]),
        "params": params.model_dump(),
    }


def plot_loss_curve(metrics: dict[str, Any]) -> Any:
    """Training loss per step, as a plotly figure kedro-viz can preview."""
    import plotly.graph_objects as go

    history = metrics["loss_per_step"]
    figure = go.Figure(
        go.Scatter(
            x=[row["step"] for row in history], y=[row["loss"] for row in history],
            mode="lines+markers", name="training loss",
        )
    )
    figure.update_layout(
        title=f"{metrics['variant']}: training loss on response tokens "
        f"({metrics['tokens_per_s']} tokens/s, {metrics['wall_time_s']} s)",
        xaxis_title="step", yaxis_title="loss", template="plotly_white",
    )
    return figure
