"""One CPU-thread policy for every pipeline: how many torch threads this process uses.

On a shared CPU an OpenMP thread whose core is taken by another job makes every parallel op
wait for it, so a process that asks for all cores runs several times slower than one that
leaves the busy cores out. Training and generation both call :func:`use_cpu_threads`, measured
for both workloads, idle and busy, by ``benchmarks/bench_threads.py``
(``docs/results/threads.md``). On a GPU it changes nothing.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform``): floating-point results of
    the same run differ slightly between CPU models, so every timing record names it."""
    import platform
    from pathlib import Path

    try:
        return next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def free_cores(sample_s: float = 0.5) -> int:
    """Cores not busy with other work right now, shared among the DDP ranks on this machine.

    The CPU use is sampled while this process waits: unlike the load average, it does not
    count this process's own work of the last minute (data preparation, an earlier node).
    """
    import psutil

    cores = os.cpu_count() or 1
    busy = round(psutil.cpu_percent(interval=sample_s) / 100 * cores)
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # DDP ranks on this host
    return max(1, min(cores, cores - busy) // local_processes)


def use_cpu_threads(setting: int | str | None, device: str = "cpu") -> int | None:
    """Set torch's CPU threads from a parameter (``training.torch_threads``,
    ``reporting.torch_threads``) and return them: ``"auto"`` = :func:`free_cores`, a number as
    given, ``None`` torch's default. On a GPU device: a no-op that returns None."""
    import torch

    if not str(device).startswith("cpu"):
        return None
    if setting == "auto":
        setting = free_cores()
    if setting:
        torch.set_num_threads(int(setting))
    threads = torch.get_num_threads()
    logger.info("CPU threads: %d (setting %r)", threads, setting)
    return threads
