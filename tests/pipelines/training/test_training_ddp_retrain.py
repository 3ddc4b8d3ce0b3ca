"""`retrain: true` under DDP: every rank takes the same path, even when one rank looks late.

Two CPU processes over gloo. Rank 1 reaches the check a second after rank 0; had it looked at
the directory itself, it would find it already deleted, skip the barriers, and the collective
after it would never match (a hang, here a gloo timeout).
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests import processes

WORLD = 2


def _rank(rank: int, port: int, directory: str, out: str) -> None:
    """One DDP rank: set up as torch.distributed.run would, then start afresh."""
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from mift_kedro.distributed import remove_once

    state = PartialState(cpu=True, timeout=timedelta(seconds=20))
    if rank == 1:
        time.sleep(1.0)  # rank 0 has deleted the directory by now
    removed = remove_once(state, Path(directory))
    ranks_past = gather_object([rank])  # the next collective: every rank must reach it
    Path(out, f"{rank}.json").write_text(
        json.dumps({"removed": removed, "exists_after": Path(directory).exists(), "gathered": ranks_past})
    )
    # Leave together: a rank exiting while gloo's threads still serve the other aborts (SIGABRT)
    state.wait_for_everyone()
    state.destroy_process_group()


@pytest.mark.slow
def test_retrain_deletes_once_and_every_rank_takes_the_same_path(tmp_path):
    checkpoints = tmp_path / "checkpoints" / "run"
    (checkpoints / "checkpoint-2").mkdir(parents=True)
    (checkpoints / "checkpoint-2" / "trainer_state.json").write_text("{}")
    out = tmp_path / "out"
    out.mkdir()

    processes.spawn_ranks(_rank, (processes.free_port(), str(checkpoints), str(out)), WORLD, timeout=120)

    results = [json.loads((out / f"{rank}.json").read_text()) for rank in range(WORLD)]
    assert [r["removed"] for r in results] == [True, True]  # decided once, for every rank
    assert not any(r["exists_after"] for r in results)
    assert all(r["gathered"] == list(range(WORLD)) for r in results)
