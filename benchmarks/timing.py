"""Timing, FLOP counting and memory probes shared by the benchmarks.

The machine may be shared: timings interleave the cases (one call of each per round, rounds repeated) and report
medians, so that load drifting over the run hits vtfusion and its peer alike.
"""

import statistics
import time
from collections.abc import Callable

from torch.utils.flop_counter import FlopCounterMode

from training.machine import matmul_gflops


def interleaved_times(cases: dict[str, Callable], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each case, over `rounds` rounds that each call every case once, after `warmup` rounds."""
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    times = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def matmul_flops_per_second() -> float:
    """fp32 FLOP/s of the machine's matmul peak, measured as the main job measures it (`training.machine`)."""
    return matmul_gflops() * 1e9


def count_flops(fn: Callable) -> int:
    """Matmul-class FLOPs (mm, bmm, attention, convolution; forward and backward) of one call of `fn`."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def rss_mb(field: str = "VmRSS") -> float:
    """Resident memory of this process in MiB: `VmRSS` now, or `VmHWM` (the peak so far)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")
