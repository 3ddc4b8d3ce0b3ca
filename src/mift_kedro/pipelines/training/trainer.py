"""transformers' Trainer, made to pay only for useful work on small batches of chat examples.

Two changes, both measured by ``benchmarks/bench_training.py``:

* **Padding-free batches.** :class:`transformers.DataCollatorWithFlattening` concatenates a
  batch into one row with ``position_ids`` restarting at each example; transformers turns
  those into a block-diagonal attention mask, so no token is padding and no example sees
  another.
* **Logits only where there is a loss.** The forward gets ``logits_to_keep`` = the positions
  whose next token is a response token, so the LM head (49k x 576 for SmolLM2, a fifth of
  the model) runs on a few tokens per example instead of all of them.

The loss is the mean cross-entropy over the response tokens of the whole optimizer step
(all accumulation micro-batches and all processes), as transformers' own causal-LM loss.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback

#: Attention implementation for padding-free batches: SDPA run per example.
PACKED_ATTENTION = "mift_packed_sdpa"


def packed_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Causal SDPA on each example of a flattened batch (boundaries: ``cu_seq_lens_q``).

    SDPA on the whole flattened row with a block-diagonal mask computes every pair of tokens
    and masks most of them out (a quarter of the step time at 8 examples per row); per example,
    attention costs the sum of squared lengths, like flash-attention's varlen kernels on GPUs.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None or query.shape[0] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling)
    bounds = bounds.tolist()
    outputs = [
        sdpa_attention_forward(
            module, query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], None,
            dropout, scaling, is_causal=True,
        )[0]
        for start, end in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return torch.cat(outputs, dim=1), None


def register_packed_attention() -> str:
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_sdpa_attention)
    return PACKED_ATTENTION


def packed_collator() -> Any:
    """Padding-free batches with the example boundaries that :func:`packed_sdpa_attention` reads."""
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(return_flash_attn_kwargs=True)


class CompletionOnlyTrainer(Trainer):
    """A Trainer whose loss computes logits at response positions only."""

    # `compute_loss` divides by the step's response-token count, so it is already scaled for
    # gradient accumulation.
    loss_is_scaled_for_ga = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        targets = labels[:, 1:]  # position t predicts token t + 1
        rows, cols = (targets != -100).nonzero(as_tuple=True)
        if labels.shape[0] != 1:
            raise ValueError("CompletionOnlyTrainer expects flattened (padding-free) batches")
        outputs = model(**inputs, logits_to_keep=cols, use_cache=False)
        logits = outputs.logits[0].float()
        loss = F.cross_entropy(logits, targets[rows, cols], reduction="sum")
        if num_items_in_batch is None:
            num_items_in_batch = max(len(cols), 1) * getattr(
                self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps
            )
        loss = loss / num_items_in_batch
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            # num_items_in_batch counts every process's tokens, and DDP averages gradients
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss


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
