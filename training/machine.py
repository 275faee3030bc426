"""The machine a run is on: its matmul speed (next to every wall time, so runs on different machines compare) and
the CPU threads training uses, chosen so that a busy machine slows a run by the share of cores others take.

Why threads need care on a shared CPU: an OpenMP team waits at every barrier for its slowest thread, spinning. With
2 threads on 2 cores and one other CPU-bound process, one of the threads keeps losing its core, and a step of the
bench's ITC model took 760 ms instead of 113 (6.7x); with 1 thread it took 198 ms, alone or not. Telling OpenMP to
sleep instead of spinning (`OMP_WAIT_POLICY=PASSIVE`) cost 58% when the machine was idle (178 ms), and shorter spins
(`GOMP_SPINCOUNT=1000`) still 25% (141 ms idle, 239 busy). So training keeps all cores and spinning, and drops to one
thread when timed steps find one thread faster: at the start, and whenever steps suddenly slow down
(`ThreadTuner`, fed by `BusyMachineCallback`); it goes back to all cores when a later trial finds them faster.
"""

import logging
import os
import time

import torch
from transformers import TrainerCallback


logger = logging.getLogger(__name__)


def matmul_gflops(size: int = 2048, repeats: int = 3) -> float:
    """fp32 GFLOP/s of the best of `repeats` [size, size] @ [size, size] products: the machine's matmul peak."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def fair_share() -> int:
    """The cores of this machine divided among its training processes (`accelerate launch` sets LOCAL_WORLD_SIZE)."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def configure_threads() -> int:
    """Start on this process's share of the cores, unless OMP_NUM_THREADS says otherwise; `ThreadTuner` then keeps
    or lowers it by timing real steps. Returns the thread count set."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(fair_share())
    return torch.get_num_threads()


class ThreadTuner:
    """Chooses the thread count by timing real training steps: a trial runs `window` steps (after one to settle) on
    the process's share of the cores and `window` on one thread, and keeps the faster. Trials run at the start, when
    steps become `slowdown` times slower than the trial measured (another process took cores), and every
    `recheck_every` steps while on fewer threads than the share (that process may be gone). A synthetic matmul probe
    was tried first: measured while OpenMP threads slept (`OMP_WAIT_POLICY=PASSIVE`, since dropped), its 2-thread
    time swung 2x from run to run while the real step's did not, and timing real steps needs no proxy."""

    def __init__(self, window: int = 4, slowdown: float = 1.6, recheck_every: int = 100):
        self.window, self.slowdown, self.recheck_every = window, slowdown, recheck_every
        self.best_seconds = None  # the chosen thread count's median step time in the last trial
        self.pending, self.timings, self.recent, self.steps_since_trial = [], {}, [], 0
        self.start_trial()

    def start_trial(self) -> None:
        self.pending = [fair_share(), 1] if fair_share() > 1 else []
        self.timings, self.recent = {}, []
        if self.pending:
            torch.set_num_threads(self.pending[0])

    def observe(self, seconds: float) -> None:
        """Called with each training step's duration."""
        threads = torch.get_num_threads()
        if self.pending:
            self.timings.setdefault(threads, []).append(seconds)
            if len(self.timings[threads]) > self.window:  # the first step after a switch only settles
                self.pending.pop(0)
                if self.pending:
                    torch.set_num_threads(self.pending[0])
                else:
                    self.finish_trial()
            return
        self.steps_since_trial += 1
        self.recent = (self.recent + [seconds])[-self.window :]
        typical = sorted(self.recent)[len(self.recent) // 2]
        slowed = len(self.recent) == self.window and typical > self.slowdown * self.best_seconds
        if slowed or (threads < fair_share() and self.steps_since_trial >= self.recheck_every):
            self.start_trial()

    def finish_trial(self) -> None:
        medians = {count: sorted(times[1:])[len(times[1:]) // 2] for count, times in self.timings.items()}
        chosen = min(medians, key=medians.get)
        if chosen < fair_share():
            logger.warning(
                f"A training step took {medians[chosen]:.2f} s on {chosen} thread(s) against "
                f"{medians[fair_share()]:.2f} s on {fair_share()}: the cores are busy, training on {chosen}."
            )
        torch.set_num_threads(chosen)
        self.best_seconds, self.steps_since_trial = medians[chosen], 0


class BusyMachineCallback(TrainerCallback):
    """`ThreadTuner` fed with every training step's duration (nothing when OMP_NUM_THREADS is set)."""

    def __init__(self):
        self.tuner, self.step_start = None, None

    def on_step_begin(self, args, state, control, **kwargs):
        if "OMP_NUM_THREADS" not in os.environ:
            self.tuner = self.tuner or ThreadTuner()
            self.step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.tuner is not None and self.step_start is not None:
            self.tuner.observe(time.perf_counter() - self.step_start)
