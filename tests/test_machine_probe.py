"""The CPU parallel-speedup probe the capacity and scale-out benchmarks print with their machine."""

import pytest

from benchmarks.machine import cpu_parallel_speedup


def test_one_process_against_one_is_about_even():
    # the same work measured twice: a busy host makes this noisy, but never 2x either way
    assert 0.5 < cpu_parallel_speedup(procs=1, seconds=0.3) < 2.0


def test_two_processes_give_at_most_two_cpus_of_work():
    s = cpu_parallel_speedup(procs=2, seconds=0.3)
    assert 0.5 < s <= 2.3, s  # a 2-vCPU host gives between about 1.1 and 2 cores


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="procs must be >= 1"):
        cpu_parallel_speedup(procs=0)
    with pytest.raises(ValueError, match="seconds > 0"):
        cpu_parallel_speedup(procs=1, seconds=0)
    with pytest.raises(ValueError, match="rounds >= 1"):
        cpu_parallel_speedup(procs=1, rounds=0)
