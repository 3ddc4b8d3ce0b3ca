"""Running the whole Kedro pipeline under ``accelerate launch``: every process trains, one writes.

Each process of ``accelerate launch -m mift_kedro --pipeline training`` runs the same
nodes (DDP needs every rank in the training step). Catalog artifacts must be written once,
so :class:`MainProcessSavesHooks` turns saves of persisted datasets into no-ops on the other
processes, and after each such save every process waits until the main one has written it
(so a later node on any rank can load it). In-memory datasets stay per process.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl


def _is_distributed() -> bool:
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


def _is_memory(catalog: Any, name: str) -> bool:
    from kedro.io import MemoryDataset

    try:
        return isinstance(catalog[name], MemoryDataset)
    except Exception:  # not registered yet: the runner makes it a MemoryDataset
        return True


class MainProcessSavesHooks:
    """Only the main process writes persisted catalog datasets; the others wait for it."""

    def __init__(self) -> None:
        self._state = None
        self._catalog = None

    @hook_impl
    def after_catalog_created(self, catalog: Any) -> None:
        if not _is_distributed():
            return
        self._state, self._catalog = distributed_state(), catalog
        if self._state.is_main_process:
            return
        save = catalog.save

        def save_on_main_only(name: str, data: Any) -> None:
            if _is_memory(catalog, name):
                save(name, data)

        catalog.save = save_on_main_only

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        if self._state is not None and not _is_memory(self._catalog, dataset_name):
            self._state.wait_for_everyone()
