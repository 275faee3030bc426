"""Peak resident memory (RSS) of a workload, measured in a child process so that nothing else shares its peak.

The child is forked from the benchmark process before that process has run any computation (no thread pool yet,
so forking is safe); it starts from the same resident baseline (interpreter, torch, transformers) as every other
child, runs the workload and reports its own peak (`VmHWM`).
"""

import multiprocessing
import traceback
from collections.abc import Callable

from .models import build, random_batch
from .timing import rss_mb
from .workloads import OBJECTIVES, TrainStep


def _child(connection, fn, args):
    try:
        result = fn(*args)
        connection.send(("ok", result, rss_mb("VmHWM")))
    except Exception:  # report the failure to the parent instead of dying silently
        connection.send(("error", traceback.format_exc(), None))
    finally:
        connection.close()


def run_in_child(fn: Callable, *args) -> tuple[object, float]:
    """(fn(*args), peak RSS in MiB of the forked child that ran it)."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, fn, args))
    process.start()
    sender.close()
    status, result, peak = receiver.recv()
    process.join()
    if status != "ok":
        raise RuntimeError(f"benchmark child failed:\n{result}")
    return result, peak


def train_steps(pairs: list[tuple[str, str]], steps: int = 2) -> None:
    """Build the model of each (objective, side) with its optimizer, then run `steps` steps of each in turn."""
    batch = random_batch()
    trainers = []
    for objective, side in pairs:
        model_name, loss_fn = OBJECTIVES[objective][side]
        trainers.append(TrainStep(build(model_name).train(), loss_fn, batch))
    for _ in range(steps):
        for step in trainers:
            step()


def training_peak_rss(*pairs: tuple[str, str]) -> float:
    """Peak RSS (MiB) of a process that trains the models of `pairs` (objective, side), each with its optimizer."""
    return run_in_child(train_steps, list(pairs))[1]
