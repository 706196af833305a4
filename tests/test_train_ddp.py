"""Training under torchrun with several ranks: the ranks agree on when to stop, and each resumes its own
sampler stream. Two real gloo processes on the CPU (a single lent GPU cannot run two NCCL ranks)."""

from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.train import any_rank, sampler_state_for
from tests.realdevices import free_port


def _rank_proc(rank: int, world: int, port: int, flags: list[bool], out) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out.put((rank, [any_rank(flags[rank], torch.device("cpu")) for _ in range(2)]))
    finally:
        dist.destroy_process_group()


def _agree(flags: list[bool]) -> dict[int, list[bool]]:
    ctx = mp.get_context("spawn")
    out, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_rank_proc, args=(r, len(flags), port, flags, out)) for r in range(len(flags))]
    for p in procs:
        p.start()
    got = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return got


def test_one_rank_past_its_time_stops_every_rank():
    # rank 1's clock ran past --max-minutes, rank 0's did not: both must leave the loop at this step
    assert _agree([False, True]) == {0: [True, True], 1: [True, True]}


def test_no_rank_past_its_time_keeps_every_rank_training():
    assert _agree([False, False]) == {0: [False, False], 1: [False, False]}


def test_resumed_ranks_draw_their_own_crops():
    saved = [np.random.default_rng(0).bit_generator.state]  # a checkpoint records rank 0's sampler only
    assert sampler_state_for(0, saved, seed=0, step=300) == saved[0]
    draws = {}
    for rank in (1, 2):
        g = np.random.default_rng()
        g.bit_generator.state = sampler_state_for(rank, saved, seed=0, step=300)
        draws[rank] = g.integers(0, 2**31, 8)
        again = np.random.default_rng()
        again.bit_generator.state = sampler_state_for(rank, saved, seed=0, step=300)
        assert np.array_equal(again.integers(0, 2**31, 8), draws[rank])  # reproducible
    rank0 = np.random.default_rng()
    rank0.bit_generator.state = saved[0]
    first = rank0.integers(0, 2**31, 8)
    assert not np.array_equal(draws[1], draws[2])
    assert not np.array_equal(draws[1], first) and not np.array_equal(draws[2], first)
