"""Threads on a shared CPU: timed training steps choose between the process's share of the cores and one thread."""

import pytest
import torch

from training import machine


@pytest.fixture(autouse=True)
def two_cores(monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(machine, "fair_share", lambda: 2)
    yield
    torch.set_num_threads(threads)


def run(tuner, step_seconds: dict[int, float], steps: int) -> list[int]:
    """Feed `steps` steps whose duration depends on the thread count; the thread count of each step."""
    used = []
    for _ in range(steps):
        threads = torch.get_num_threads()
        used.append(threads)
        tuner.observe(step_seconds[threads])
    return used


def test_a_trial_at_the_start_keeps_all_cores_when_they_are_faster():
    tuner = machine.ThreadTuner(window=3)
    used = run(tuner, {2: 0.1, 1: 0.2}, 12)
    assert used[:8] == [2] * 4 + [1] * 4 and set(used[8:]) == {2}


def test_a_busy_machine_trains_on_one_thread():
    tuner = machine.ThreadTuner(window=3)
    used = run(tuner, {2: 0.8, 1: 0.2}, 12)
    assert set(used[8:]) == {1}


def test_steps_that_slow_down_start_a_new_trial_that_drops_to_one_thread():
    tuner = machine.ThreadTuner(window=3, slowdown=1.6)
    run(tuner, {2: 0.1, 1: 0.2}, 10)  # idle: all cores
    used = run(tuner, {2: 0.8, 1: 0.2}, 20)  # another process took a core
    assert used[:3] == [2, 2, 2] and used[-1] == 1


def test_one_thread_is_rechecked_and_all_cores_come_back_when_free():
    tuner = machine.ThreadTuner(window=3, recheck_every=5)
    run(tuner, {2: 0.8, 1: 0.2}, 10)  # busy: one thread
    used = run(tuner, {2: 0.1, 1: 0.2}, 20)  # the other process ended
    assert used[0] == 1 and used[-1] == 2


def test_omp_num_threads_is_obeyed(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    callback = machine.BusyMachineCallback()
    callback.on_step_begin(None, None, None)
    callback.on_step_end(None, None, None)
    assert callback.tuner is None and machine.configure_threads() == 1
