"""One CPU-thread policy for training and generation (mift_kedro.threads)."""

from __future__ import annotations

import psutil
import pytest
import torch

from mift_kedro import threads


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("busy_percent", "ranks", "expected"), [
    (0.0, "1", 4), (50.0, "1", 2), (100.0, "1", 1), (0.0, "2", 2), (25.0, "2", 1),
])
def test_auto_leaves_out_busy_cores_and_shares_the_rest_among_ranks(monkeypatch, busy_percent, ranks, expected):
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval: busy_percent)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", ranks)
    assert threads.use_cpu_threads("auto") == expected == torch.get_num_threads()


def test_a_number_is_taken_as_given_and_a_gpu_is_left_alone(monkeypatch):
    assert threads.use_cpu_threads(1) == 1 == torch.get_num_threads()
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval: pytest.fail("a GPU run asked the CPU"))
    assert threads.use_cpu_threads("auto", device="cuda:0") is None
    assert torch.get_num_threads() == 1

