"""TRL's ``SFTTrainer``, as the training pipeline runs it.

TRL does the data work: it renders the conversational prompt/completion rows through the
tokenizer's chat template (the same one generation uses), masks the prompt (completion-only
loss) and flattens each batch into one padding-free row with the examples' boundaries
(``padding_free=True``). :class:`VariantSFTTrainer` adds what the project measured or needs:

* **The LM head at response positions, without extras**: TRL's fused head also computes each
  position's entropy and top-1 accuracy (logged metrics); on this data that made a training
  step ~40% slower than ``logits_to_keep`` at the labelled positions plus cross-entropy
  (measured, ``benchmarks/bench_training.py``), so :meth:`VariantSFTTrainer.compute_loss`
  does the latter. Same loss: the mean over the step's response tokens.
* **Attention per example** in padding-free batches (:func:`packed_sdpa_attention`, reading
  the boundaries TRL's collator passes as ``cu_seq_lens_q``): transformers' SDPA path turns a
  flattened row into a block-diagonal mask and computes every pair of tokens. Sliding windows
  and Gemma-2's attention-logit soft-capping are applied per example too.
* **The overlong policy**: examples longer than ``training.max_length`` are dropped or
  truncated, and counted (``data_report``), instead of TRL's silent truncation.
* **LoRA weights in the dtype the device trains them in** (:func:`mift_kedro.models.trainable_dtype`):
  TRL casts QLoRA adapters to bf16 (the QLoRA paper's bf16 compute on GPUs); on the CPU the
  weights are fp32, so the adapters stay fp32 there (master weights; ``training.sft.bf16:
  true`` adds bf16 autocast), and so they do under fp16 mixed precision (GPUs before Ampere),
  whose gradient scaler cannot unscale fp16 gradients.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback
from trl import SFTTrainer

logger = logging.getLogger(__name__)

#: Attention implementation for padding-free batches: SDPA run per example.
PACKED_ATTENTION = "mift_packed_attention"  # no "sdpa" in it: transformers would demand SDPA support (Gemma-2 has none)


def packed_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Causal SDPA on each example of a flattened batch (boundaries: ``cu_seq_lens_q``).

    SDPA on the whole flattened row with a block-diagonal mask computes every pair of tokens
    and masks most of them out (a quarter of the step time at 8 examples per row); per example,
    attention costs the sum of squared lengths, like flash-attention's varlen kernels on GPUs.
    A layer's sliding window (Mistral, Qwen2, Gemma-2/3: ``sliding_window``) applies to an
    example longer than it, through a banded causal mask; soft-capped attention logits
    (Gemma-2: ``softcap``) are computed in eager attention, per example too.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None or query.shape[0] != 1:
        if kwargs.get("softcap"):  # SDPA has no soft-capping: the model family's eager attention
            from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward

            return eager_attention_forward(module, query, key, value, attention_mask, dropout, scaling, kwargs["softcap"])
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling)
    window, softcap = kwargs.get("sliding_window"), kwargs.get("softcap")
    outputs = []
    for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        q, k, v = query[:, :, start:end], key[:, :, start:end], value[:, :, start:end]
        banded = window is not None and end - start > window
        if softcap:
            outputs.append(_eager_attention(module, q, k, v, _causal(end - start, window, q.device), dropout, scaling, softcap))
        elif banded:
            mask = _causal(end - start, window, q.device)
            outputs.append(sdpa_attention_forward(module, q, k, v, mask, dropout, scaling, is_causal=False)[0])
        else:
            outputs.append(sdpa_attention_forward(module, q, k, v, None, dropout, scaling, is_causal=True)[0])
    return torch.cat(outputs, dim=1), None


def _causal(length: int, window: int | None, device: Any) -> torch.Tensor:
    """Boolean ``(1, 1, length, length)`` mask, True where a query attends: causal, and within
    ``window`` tokens (itself included) when set, as transformers' sliding-window masks."""
    positions = torch.arange(length, device=device)
    allowed = positions[None, :] <= positions[:, None]
    if window is not None:
        allowed &= positions[None, :] > positions[:, None] - window
    return allowed[None, None]


def _eager_attention(module, query, key, value, allowed, dropout, scaling, softcap) -> torch.Tensor:
    """Attention with logit soft-capping (``softcap * tanh(scores / softcap)``, Gemma-2), as the
    model's own eager attention computes it; output ``(batch, length, heads, dim)``."""
    from transformers.integrations.sdpa_attention import repeat_kv

    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scores = (query @ key.transpose(2, 3)) * (scaling if scaling is not None else query.shape[-1] ** -0.5)
    scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    probs = scores.softmax(dim=-1, dtype=torch.float32).to(query.dtype)
    probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
    return (probs @ value).transpose(1, 2).contiguous()


def register_packed_attention() -> str:
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_sdpa_attention)
    return PACKED_ATTENTION


def fit_length(dataset: Any, max_length: int, overlong: str) -> tuple[Any, dict[str, int]]:
    """Drop (``overlong: drop``) or truncate (``truncate``) tokenized examples longer than
    ``max_length``; a truncated example left without a response token is dropped too.

    Returns the dataset and the counts, so nothing is lost silently.
    """
    examples_in = len(dataset)
    too_long = sum(len(ids) > max_length for ids in dataset["input_ids"])
    if overlong == "truncate" and too_long:
        dataset = dataset.map(lambda ex: {k: ex[k][:max_length] for k in ("input_ids", "labels")})
    dataset = dataset.filter(
        lambda ex: len(ex["input_ids"]) <= max_length and any(t != -100 for t in ex["labels"][1:])
    )
    dropped = examples_in - len(dataset)
    report = {
        "examples_in": examples_in,
        "dropped_overlong": dropped,
        "truncated": too_long - dropped if overlong == "truncate" else 0,
        "examples": len(dataset),
    }
    if not len(dataset):
        raise ValueError(
            f"No training example fits training.max_length={max_length}: raise it, or set "
            "training.overlong: truncate."
        )
    return dataset, report


class VariantSFTTrainer(SFTTrainer):
    """``SFTTrainer`` with the overlong policy on its tokenized data, LoRA weights kept in
    ``trainable_dtype`` and the loss computed at response positions only;
    ``data_report`` counts what the policy dropped or truncated."""

    def __init__(self, *args: Any, max_length: int, overlong: str, trainable_dtype: Any, **kwargs: Any) -> None:
        self.length_policy = (max_length, overlong)
        self.data_report: dict[str, int] = {}
        super().__init__(*args, **kwargs)
        for param in self.model.parameters():
            if param.requires_grad and param.dtype != trainable_dtype:
                param.data = param.data.to(trainable_dtype)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Cross-entropy of the response tokens, logits computed at their positions only."""
        labels = inputs.pop("labels")
        if labels.shape[0] != 1:
            raise ValueError("VariantSFTTrainer expects padding-free batches (one row per batch)")
        targets = labels[:, 1:]  # position t predicts token t + 1
        rows, cols = (targets != -100).nonzero(as_tuple=True)
        outputs = model(**inputs, logits_to_keep=cols, use_cache=False)
        loss = torch.nn.functional.cross_entropy(outputs.logits[0].float(), targets[rows, cols], reduction="sum")
        if num_items_in_batch is None:
            steps = getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
            num_items_in_batch = max(len(cols), 1) * steps
        loss = loss / num_items_in_batch
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            loss = loss * self.accelerator.num_processes  # num_items_in_batch counts all ranks; DDP averages
        return (loss, outputs) if return_outputs else loss

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        dataset = super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)
        if dataset_name == "train":
            dataset, self.data_report = fit_length(dataset, *self.length_policy)
        return dataset


class TrainingProgress(TrainerCallback):
    """One tqdm bar per run showing loss and tokens/s (main process only)."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = tqdm(
                total=state.max_steps, initial=state.global_step, desc=self.description, unit="step",
                dynamic_ncols=True,
            )
        self._start, self._tokens0 = time.perf_counter(), state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs and "loss" in logs:
            elapsed = max(time.perf_counter() - self._start, 1e-9)
            rate = (state.num_input_tokens_seen - self._tokens0) / elapsed
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}", tok_s=f"{rate:.0f}", refresh=False)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
