"""The probes the capacity and scale-out benchmarks print with their machine."""

import os

import pytest

from benchmarks.machine import cpu_description, cpu_parallel_speedup, loopback_message_us


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


def test_loopback_message_costs_microseconds_and_grows_with_size():
    small = loopback_message_us(n_bytes=100, messages=300, rounds=5)
    # a message through loopback TCP is a few system calls: microseconds, never nothing, never a millisecond
    assert 0.5 < small < 1000.0, small
    # copying 600x the bytes is not free: the probe really moves them (about 1.5x the time on the build machine;
    # medians of 5 rounds, so a host stall in one or two rounds cannot turn the order round)
    big = loopback_message_us(n_bytes=60_000, messages=80, rounds=5)
    assert big > small, (small, big)


def test_loopback_probe_refuses_bad_arguments():
    with pytest.raises(ValueError, match=r"n_bytes must be in \[1, 65536\]"):
        loopback_message_us(n_bytes=0)
    with pytest.raises(ValueError, match="got 100000"):
        loopback_message_us(n_bytes=100_000)
    with pytest.raises(ValueError, match="messages and rounds >= 1"):
        loopback_message_us(messages=0)


def test_cpu_description_names_this_machine():
    d = cpu_description()
    assert d["cpus"] == os.cpu_count()
    if os.path.exists("/proc/cpuinfo"):  # Linux: the model name is there (virtual machines included)
        assert d["model"]
    assert d["threads_per_core"] is None or 1 <= d["threads_per_core"] <= 8, d
