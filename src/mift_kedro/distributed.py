"""The processes of an ``accelerate launch`` run: which one this is, and steps they take together.

Each process of ``accelerate launch -m mift_kedro --pipelines training`` runs the same
nodes (DDP needs every rank in the training step). Shared by the training nodes and by
:class:`mift_kedro.hooks.MainProcessSavesHooks` (only the main process writes artifacts),
so the project's hooks need no pipeline package.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def is_distributed() -> bool:
    """Whether this process is one of several launched together (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def distributed_state() -> Any:
    """accelerate's process state; without GPUs, DDP runs on CPU processes over gloo.

    ``accelerate launch --cpu`` starts several processes only through MPI, so on a CPU
    machine launch with ``accelerate launch --multi_gpu --num_processes N`` (or the llama2
    config with ``--num_processes N``): its launcher (torch.distributed.run) starts the
    processes, and ``cpu=True`` here makes them CPU ranks. On GPUs, one process per GPU.
    """
    import torch
    from accelerate import PartialState

    gpus, local = torch.cuda.device_count(), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if gpus and local > gpus:
        raise RuntimeError(
            f"{local} processes were launched on this machine, which has {gpus} GPU(s): a rank "
            f"would ask for a GPU that does not exist. Launch one process per GPU: accelerate "
            f"launch --num_processes {gpus} (on several machines: GPUs per machine x --num_machines)."
        )
    return PartialState(cpu=not torch.cuda.is_available())


def remove_once(state: Any, directory: Path) -> bool:
    """Delete ``directory`` (the main process does), every process taking the same path.

    Whether it exists is decided once, by the main process, and broadcast: a rank that looked
    for itself after the main process had deleted it would skip the barriers below, and the
    next collective would hang. Barrier (no rank still reads it), delete, barrier (no rank
    looks before it is gone). Returns whether it existed.
    """
    from accelerate.utils import broadcast_object_list

    exists = broadcast_object_list([directory.is_dir() if state.is_main_process else None])[0]
    if exists:
        state.wait_for_everyone()
        if state.is_main_process:
            shutil.rmtree(directory)
        state.wait_for_everyone()
    return exists


def map_across_processes(items: Sequence[Any], work: Callable[[list[Any]], list[Any]]) -> list[Any]:
    """``work(items)``, shared out among the processes of an ``accelerate launch``.

    Each process gets a contiguous share of ``items`` (accelerate's ``split_between_processes``),
    runs ``work`` on it (one result per item) and every process gets all results back in the
    order of ``items`` (``gather_object``): N GPUs evaluate N times as fast, and what the
    main process writes equals a one-process run. In one process: ``work(list(items))``.
    """
    if not is_distributed():
        return work(list(items))
    from accelerate.utils import gather_object

    state = distributed_state()
    with state.split_between_processes(list(enumerate(items))) as share:
        results = work([item for _, item in share]) if share else []
        mine = [(index, result) for (index, _), result in zip(share, results, strict=True)]
    return [result for _, result in sorted(gather_object(mine), key=lambda pair: pair[0])]


def on_main_process(work: Callable[[], Any]) -> Any:
    """``work()`` done once, by the main process of an ``accelerate launch``, its result sent to
    every process (the others wait): for work each process needs the result of but one process
    should do (BERTScore's roberta-large on every GPU would score the same rows N times). An
    error on the main process is raised on every process. In one process: ``work()``.
    """
    if not is_distributed():
        return work()
    from accelerate.utils import broadcast_object_list

    state = distributed_state()
    outcome: list[Any] = [None]
    if state.is_main_process:
        try:
            outcome = [(True, work())]
        except Exception as exc:
            broadcast_object_list([(False, f"{type(exc).__name__}: {exc}")])
            raise
    ok, value = broadcast_object_list(outcome)[0]
    if not ok:
        raise RuntimeError(f"The main process failed: {value}")
    return value
