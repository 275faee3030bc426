"""A busy machine: how much one competing CPU-bound process slows a training step, with torch's default threads and
with the training entry point's settings (`training.machine`). Each measurement runs in a fresh child process, since
OpenMP reads its settings once, when torch loads it.

    python -m benchmarks.busy        # prints step times alone and beside a competitor, both settings
"""

import json
import os
import subprocess
import sys
import time


STEPS, WARMUP = 12, 3
COMPETITOR = "while True: pass"  # one core's worth of CPU-bound work


def step_seconds(tuner=None) -> float:
    """Median seconds of the bench's ITC training step (CLIP-sized towers, batch 16) in this process, over the last
    `STEPS` steps; a `ThreadTuner` is fed every step, as in training (its trial comes first)."""
    import statistics

    from .models import build, random_batch
    from .workloads import OBJECTIVES, TrainStep

    name, loss = OBJECTIVES["itc"]["vtfusion"]
    step = TrainStep(build(name), loss, random_batch())
    trial = 2 * (tuner.window + 1) if tuner else 0  # the tuner's first trial: both thread counts
    times = []
    for _ in range(WARMUP + trial + STEPS):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        if tuner:
            tuner.observe(times[-1])
    return statistics.median(times[-STEPS:])


def measure(settings: str, busy: bool) -> float:
    """Step seconds in a child process with `settings` ("default": torch's threads, "entry_point": as
    `training.train` sets them), beside a competing process or alone."""
    competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR]) if busy else None
    try:
        time.sleep(1.0 if busy else 0)  # the competitor is running, and counted in the load, before the child starts
        code = f"import sys, json; from benchmarks.busy import child; print(json.dumps(child({settings!r})))"
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()


def child(settings: str) -> float:
    if settings == "entry_point":
        from training.machine import ThreadTuner, configure_threads

        configure_threads()
        return step_seconds(ThreadTuner())
    return step_seconds()


def busy_rows() -> list[dict]:
    from .run import row

    seconds = {(s, busy): measure(s, busy) for s in ("default", "entry_point") for busy in (False, True)}
    slowdown = {s: seconds[(s, True)] / seconds[(s, False)] for s in ("default", "entry_point")}
    note = (
        "ITC step beside one CPU-bound process / alone: entry point's settings (training.machine) vs torch's "
        f"defaults; step ms alone {seconds[('entry_point', False)] * 1e3:.0f} vs {seconds[('default', False)] * 1e3:.0f}, "
        f"busy {seconds[('entry_point', True)] * 1e3:.0f} vs {seconds[('default', True)] * 1e3:.0f}"
    )
    return [
        row(
            "busy_machine_slowdown",
            slowdown["entry_point"],
            slowdown["default"],
            "x slower",
            False,
            note=note,
            value=slowdown["entry_point"],
        ),
    ]


if __name__ == "__main__":
    for settings in ("default", "entry_point"):
        for busy in (False, True):
            print(settings, "busy" if busy else "alone", f"{measure(settings, busy) * 1e3:.0f} ms")
