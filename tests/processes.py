"""Processes the tests start: each in its own session, stopped with every child it spawned, and
a check at the end of the test session that none is left running.

Every process started by the test session inherits :data:`SESSION_MARK` in its environment
(set by ``tests/conftest.py`` before any worker starts), so :func:`survivors` finds it even after
its parent died and it was reparented.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

#: Environment variable whose value identifies one test session's processes.
SESSION_MARK = "MIFT_TEST_SESSION"


def run(command: Sequence[str], *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a new session; whatever the command leaves behind (children still
    running when it exits, or everything when it times out) is stopped before returning."""
    kwargs.setdefault("text", True)
    if kwargs.pop("capture_output", True):
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
    with subprocess.Popen(command, start_new_session=True, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        finally:
            stop_group(process)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def stop_group(process: subprocess.Popen, timeout: float = 20) -> None:
    """Stop a process started with ``start_new_session=True`` and every child it spawned: its
    process group, and any descendant that moved to a group of its own."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:  # already gone
        descendants = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
        if _group_gone(process.pid, timeout):
            break
    kill(descendants, timeout)


def _group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def kill(processes: list[psutil.Process], timeout: float = 10) -> None:
    """Kill ``processes`` and wait until they are gone."""
    alive = [p for p in processes if p.is_running()]
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=timeout)


def survivors(mark: str, grace: float = 15) -> list[psutil.Process]:
    """Processes of the test session ``mark`` still running after ``grace`` seconds (other than
    this one): those whose environment carries the mark, and this process's descendants."""
    deadline = time.monotonic() + grace
    while True:
        found = _marked(mark) | {p for p in psutil.Process().children(recursive=True) if _running(p)}
        found -= _own_resource_tracker()
        if not found or time.monotonic() > deadline:
            return sorted(found, key=lambda p: p.pid)
        time.sleep(0.5)


def _own_resource_tracker() -> set[psutil.Process]:
    """multiprocessing's resource tracker of this very process (started by a test's spawned
    ranks when pytest runs without workers): it belongs to this process and ends with it."""
    own = set()
    for child in psutil.Process().children():
        try:
            if "multiprocessing.resource_tracker" in " ".join(child.cmdline()):
                own.add(child)
        except psutil.Error:
            continue
    return own


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _marked(mark: str) -> set[psutil.Process]:
    me = os.getpid()
    found = set()
    for process in psutil.process_iter():
        if process.pid == me:
            continue
        try:
            if process.environ().get(SESSION_MARK) == mark and _running(process):
                found.add(process)
        except psutil.Error:  # gone, or not ours to read
            continue
    return found


def describe(process: psutil.Process) -> str:
    try:
        return f"pid {process.pid}: {' '.join(process.cmdline())[:200]}"
    except psutil.Error:
        return f"pid {process.pid}"


def free_port() -> int:
    """A free loopback port below 49152 (kedro-viz refuses the ephemeral range)."""
    for port in random.Random().sample(range(20000, 40000), 50):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def wait_for_http(process: subprocess.Popen, url: str, log: Path, timeout: float) -> bytes:
    """The body of ``url`` once the server ``process`` (started with ``start_new_session``)
    answers; if it exits or ``timeout`` passes first, stop it and fail with the end of its log."""
    import pytest

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop_group(process)
                pytest.fail(f"{' '.join(map(str, process.args))} did not answer {url}:\n{log.read_text()[-3000:]}")
            time.sleep(1)


def spawn_ranks(rank: Callable[..., None], args: tuple, world: int, timeout: float) -> None:
    """Run ``rank(rank_index, *args)`` in ``world`` spawned processes, as torch.distributed.run
    would start DDP ranks; fail (killing them) when one fails or they hang past ``timeout``."""
    import pytest
    from torch.multiprocessing import start_processes

    context = start_processes(rank, args=args, nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {world} ranks of {rank.__name__} hung for {timeout:.0f} s")
