"""vtfusion vs transformers' CLIP and BLIP at a matched size: one markdown table, and `benchmarks/results.json`.

    python -m benchmarks.run [--threads N] [--rounds R] [--gallery-sizes 1000 10000] [--no-compile]

Threads: all cores unless a quick probe finds one thread faster (cores busy with other work); `--threads` forces.

Every row compares vtfusion with a peer built from transformers in this process (sizes in `benchmarks/models.py`);
`ratio` > 1 means vtfusion is better (faster, or less memory). Timings interleave vtfusion and its peer, one call
of each per round, and report medians over the rounds, so that load on a shared machine hits both alike.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import transformers
from transformers.utils import logging

from .busy import busy_rows
from .memory import run_in_child, training_peak_rss
from .models import BATCH_SIZE, NUM_DECODER_LAYERS, NUM_FUSION_LAYERS, build, num_parameters, random_batch
from .retrieval import RETRIEVAL, query_chunk
from .serving import ann_rows, cpu_inference_rows
from .timing import count_flops, interleaved_times, matmul_flops_per_second, median
from .workloads import OBJECTIVES, TrainStep, caption_generator


RESULTS_PATH = Path(__file__).with_name("results.json")
CORES = torch.get_num_threads()  # torch's default: one thread per core
GENERATE_IMAGES, GENERATE_TOKENS = 8, 20
PEER_NAMES = {"itc": "CLIP", "itm": "BLIP ITM", "caption": "BLIP captioning"}


def row(name, vtfusion, peer, unit, higher_is_better=True, **extra):
    ratio = None
    if vtfusion and peer:
        ratio = vtfusion / peer if higher_is_better else peer / vtfusion
    return {"name": name, "vtfusion": vtfusion, "peer": peer, "ratio": ratio, "unit": unit, **extra}


# -- memory (forked children, before this process computes anything) ------------------------------------------------


def measure_memory(gallery_sizes: list[int], retrieval_rounds: int) -> tuple[dict, dict]:
    training = {
        (objective, side): training_peak_rss((objective, side))
        for objective in OBJECTIVES
        for side in OBJECTIVES[objective]
    }
    # the three peer objectives trained separately in one process: three models and optimizers, steps in turn
    training["pretraining", "peer"] = training_peak_rss(*[(objective, "peer") for objective in PEER_NAMES])
    # retrieval: vtfusion and BLIP alternate on the smallest gallery (`retrieval_rounds` times); vtfusion alone, once,
    # on the larger ones (BLIP indexing 10k images would double the run for no new information)
    runs = [(side, min(gallery_sizes)) for _ in range(retrieval_rounds) for side in ("vtfusion", "peer")]
    runs[2:2] = [("vtfusion", size) for size in sorted(gallery_sizes)[1:]]
    retrieval = {}
    for side, size in runs:
        result, peak = run_in_child(RETRIEVAL[side], size)
        retrieval.setdefault((side, size), []).append({**result, "peak_rss_mb": peak})
    return training, retrieval


def memory_rows(training: dict) -> list[dict]:
    rows = []
    for objective, peer in PEER_NAMES.items():
        rows.append(
            row(
                f"rss_train_{objective}",
                training[objective, "vtfusion"],
                training[objective, "peer"],
                "MiB peak RSS",
                higher_is_better=False,
                note=f"vs {peer}",
            )
        )
    rows.append(
        row(
            "rss_train_pretraining_vs_separate",
            training["pretraining", "vtfusion"],
            training["pretraining", "peer"],
            "MiB peak RSS",
            higher_is_better=False,
            note="peer: CLIP, BLIP ITM and BLIP captioning models trained in turn in one process",
        )
    )
    return rows


def retrieval_rows(retrieval: dict, gallery_sizes: list[int]) -> list[dict]:
    def med(side, size, key):
        runs = [run[key] for run in retrieval.get((side, size), []) if key in run]
        return median(runs) if runs else None

    def rate(amount, seconds):
        return amount / seconds if seconds else None

    rows = []
    for size in gallery_sizes:
        label = f"{size // 1000}k" if size % 1000 == 0 else str(size)
        queries = retrieval["vtfusion", size][0]["queries"]
        index = [rate(2 * size, med(side, size, "index_s")) for side in ("vtfusion", "peer")]
        answered = [rate(queries, med(side, size, "query_s")) for side in ("vtfusion", "peer")]
        itc = [rate(size, med(side, size, "itc_s")) for side in ("vtfusion", "peer")]
        peak = [med(side, size, "peak_rss_mb") for side in ("vtfusion", "peer")]
        rows += [
            row(
                f"retrieval_{label}_index",
                *index,
                "items/s",
                note=f"{size} images + {size} captions embedded in batches of 256 under inference_mode",
            ),
            row(
                f"retrieval_{label}_itc_topk",
                *itc,
                "queries/s",
                note=f"ITC stage alone: all {size} captions' top-16 images, in chunks of "
                f"{min(size, query_chunk(size))} queries (64 MiB budget); no peer: the same matmul, and top-k speed "
                "depends on the (random) scores",
            ),
            row(
                f"retrieval_{label}_queries",
                *answered,
                "queries/s",
                note=f"{queries} queries (half text->image, half image->text), two-stage: ITC top-16, ITM re-rank",
            ),
            row(f"retrieval_{label}_rss", *peak, "MiB peak RSS", higher_is_better=False),
        ]
    small, large = min(gallery_sizes), max(gallery_sizes)
    if small != large:
        growth = large / small
        for key, what in (
            ("index_s", "index time"),
            ("itc_s", "ITC stage time per caption query"),
            ("query_s", "two-stage time (fixed queries)"),
            ("peak_rss_mb", "peak RSS"),
        ):
            value = med("vtfusion", large, key) / med("vtfusion", small, key)
            if key == "itc_s":  # every caption is a query: per query
                value /= growth
            rows.append(
                row(
                    f"retrieval_growth_{key.rsplit('_', 1)[0].replace('_rss', '')}",
                    value,
                    growth,
                    f"x ({small} -> {large})",
                    higher_is_better=False,
                    note=f"vtfusion {what} growth; peer column: linear growth",
                )
            )
    return rows


# -- training ----------------------------------------------------------------------------------------------------------


def training_rows(rounds: int) -> tuple[list[dict], dict]:
    batch = random_batch()
    steps, params = {}, {}
    for objective, sides in OBJECTIVES.items():
        for side, (model_name, loss_fn) in sides.items():
            model = build(model_name).train()
            steps[objective, side] = TrainStep(model, loss_fn, batch)
            params[objective, side] = num_parameters(model)
    flops = {key: count_flops(step.forward_backward) for key, step in steps.items()}
    peaks = []
    cases = {**steps, "matmul": lambda: peaks.append(matmul_flops_per_second())}
    times = interleaved_times(cases, rounds)
    peak = median(peaks[-rounds:])
    seconds = {key: median(times[key]) for key in steps}

    rows = []
    for objective, peer in PEER_NAMES.items():
        name = {"itc": "train_itc_vs_clip", "itm": "train_itm_vs_blip", "caption": "train_caption_vs_blip"}[objective]
        rows.append(
            row(
                name,
                BATCH_SIZE / seconds[objective, "vtfusion"],
                BATCH_SIZE / seconds[objective, "peer"],
                "samples/s",
                note=f"vs {peer}",
                vtfusion_params=params[objective, "vtfusion"],
                peer_params=params[objective, "peer"],
                vtfusion_gflop=flops[objective, "vtfusion"] / 1e9,
                peer_gflop=flops[objective, "peer"] / 1e9,
            )
        )
    separate = sum(seconds[objective, "peer"] for objective in PEER_NAMES)
    rows.append(
        row(
            "train_pretraining_vs_separate",
            BATCH_SIZE / seconds["pretraining", "vtfusion"],
            BATCH_SIZE / separate,
            "samples/s",
            note="vtfusion ITC+ITM+LM in one step (image encoded once) vs CLIP + BLIP ITM + BLIP LM steps",
            vtfusion_params=params["pretraining", "vtfusion"],
            peer_params=sum(params[objective, "peer"] for objective in PEER_NAMES),
            vtfusion_gflop=flops["pretraining", "vtfusion"] / 1e9,
            peer_gflop=sum(flops[objective, "peer"] for objective in PEER_NAMES) / 1e9,
        )
    )
    rows.append(
        row(
            "matmul_peak",
            peak / 1e9,
            None,
            "GFLOP/s",
            value=peak / 1e9,
            note="2048x2048 fp32 matmul, best of 3, median over rounds",
        )
    )
    for objective in OBJECTIVES:
        vt = flops[objective, "vtfusion"] / seconds[objective, "vtfusion"] / peak
        if objective == "pretraining":
            peer = sum(flops[o, "peer"] for o in PEER_NAMES) / separate / peak
        else:
            peer = flops[objective, "peer"] / seconds[objective, "peer"] / peak
        rows.append(row(f"mfu_{objective}", vt, peer, "fraction of matmul peak"))
    mfu = next(r for r in rows if r["name"] == "mfu_pretraining")
    rows.append(
        {**mfu, "name": "mfu", "value": mfu["vtfusion"], "note": "pretraining step: model FLOPs / time / peak"}
    )
    return rows, steps


# -- generation ------------------------------------------------------------------------------------------------------


def generation_rows(rounds: int) -> list[dict]:
    pixel_values = random_batch(GENERATE_IMAGES)["pixel_values"]
    models = {
        "vtfusion": build("vtfusion_captioning").eval(),
        "peer": build("blip_captioning").eval(),
        "vtfusion_floor": build("vtfusion_captioning_floor").eval(),
        "peer_floor": build("blip_captioning_floor").eval(),
    }
    vt, blip = models["vtfusion"], models["peer"]
    cases = {}
    for beams in (1, 3):
        for side, model in models.items():
            cases[side, beams] = caption_generator(model, pixel_values, GENERATE_TOKENS, beams)
    cases["peer_uncached", 1] = caption_generator(blip, pixel_values, GENERATE_TOKENS, 1, use_cache=False)
    cases["vtfusion_encode", 0] = torch.inference_mode()(lambda: vt.encode(pixel_values))
    cases["peer_encode", 0] = torch.inference_mode()(lambda: blip.vision_model(pixel_values=pixel_values))
    times = {key: median(value) for key, value in interleaved_times(cases, 2 * rounds).items()}  # calls are short
    captions = GENERATE_IMAGES
    rows = [
        row(
            "generate_cached_vs_blip",
            captions / times["vtfusion", 1],
            captions / times["peer", 1],
            "captions/s",
            note=f"greedy, {GENERATE_IMAGES} images x {GENERATE_TOKENS} tokens, KV cache, both",
        ),
        row(
            "generate_beam3_vs_blip",
            captions / times["vtfusion", 3],
            captions / times["peer", 3],
            "captions/s",
            note="beam search, 3 beams, KV cache",
        ),
        row(
            "generate_cached_vs_blip_uncached",
            captions / times["vtfusion", 1],
            captions / times["peer_uncached", 1],
            "captions/s",
            note="BLIP without its cache, for scale",
        ),
    ]
    per_token = {
        side: (times[side, 1] - times[f"{side}_encode", 0]) / GENERATE_TOKENS * 1000 for side in ("vtfusion", "peer")
    }
    rows.append(
        row(
            "generate_ms_per_token",
            per_token["vtfusion"],
            per_token["peer"],
            "ms per decode step",
            higher_is_better=False,
            note="greedy call minus image encoding, per generated token (batch 8)",
        )
    )
    for beams, search in ((1, "greedy"), (3, "beam3")):
        floor = {side: times[f"{side}_floor", beams] * 1000 for side in ("vtfusion", "peer")}
        rows.append(
            row(
                f"generate_{search}_floor_ms",
                floor["vtfusion"],
                floor["peer"],
                "ms per call",
                higher_is_better=False,
                note="the same call with both decoders 24 wide (`models.FLOOR_WIDTH`): what no decoder kernel removes",
            )
        )
        rows.append(
            row(
                f"generate_{search}_above_floor_ms",
                times["vtfusion", beams] * 1000 - floor["vtfusion"],
                times["peer", beams] * 1000 - floor["peer"],
                "ms per call",
                higher_is_better=False,
                note="the call minus its floor: what the decoder's width costs",
            )
        )
    return rows


# -- CPU specifics: threads and torch.compile ---------------------------------------------------------------------------


def thread_probe(threads: int) -> dict[int, float]:
    """Seconds for a burst of model-sized matmuls ([1024, 192] x [192, 768]) with 1 thread and with `threads`."""
    a, b = torch.randn(1024, 192), torch.randn(192, 768)
    seconds = {}
    for count in (1, threads, 1, threads):
        torch.set_num_threads(count)
        a @ b
        start = time.perf_counter()
        for _ in range(50):
            a @ b
        seconds[count] = min(seconds.get(count, float("inf")), time.perf_counter() - start)
    return seconds


def auto_threads() -> int:
    """All cores, unless they are busy: on a shared machine an OpenMP team waits at every barrier for a thread the
    scheduler gave away, and one thread runs faster. Probed in a child, before this process starts its thread pool."""
    if CORES == 1:
        return 1
    seconds = run_in_child(thread_probe, CORES)[0]
    return CORES if seconds[CORES] < 0.9 * seconds[1] else 1


def threads_rows(threads: int, steps: dict, rounds: int) -> list[dict]:
    """The thread count set is still in force after every benchmark, and how the ITC step scales with cores."""
    honoured = torch.get_num_threads() == threads
    cores = CORES
    step = steps["itc", "vtfusion"]

    def with_threads(count):
        def call():
            torch.set_num_threads(count)
            step()
            torch.set_num_threads(threads)

        return call

    times = interleaved_times({"one": with_threads(1), "all": with_threads(cores)}, max(2, rounds // 2))
    return [
        row(
            "threads_itc_scaling",
            BATCH_SIZE / median(times["all"]),
            BATCH_SIZE / median(times["one"]),
            "samples/s",
            note=f"vtfusion ITC step, {cores} threads vs 1; the run used torch.set_num_threads({threads}), "
            f"{'still in force' if honoured else 'NOT in force'} at the end",
            value=threads,
            honoured=honoured,
        )
    ]


def compile_rows(steps: dict, rounds: int) -> list[dict]:
    """torch.compile (inductor) on the vtfusion ITC training step: compile time, then steady-state speed vs eager."""
    eager = steps["itc", "vtfusion"]
    compiled = TrainStep(torch.compile(eager.model), eager.loss_fn, eager.batch, optimizer_model=eager.model)
    start = time.perf_counter()
    compiled()
    compile_seconds = time.perf_counter() - start
    times = interleaved_times({"eager": eager, "compiled": compiled}, rounds)
    return [
        row(
            "compile_itc_vs_eager",
            BATCH_SIZE / median(times["compiled"]),
            BATCH_SIZE / median(times["eager"]),
            "samples/s",
            note=f"vtfusion ITC step, torch.compile vs eager; first compiled step {compile_seconds:.0f} s",
            compile_seconds=compile_seconds,
        )
    ]


# -- report ----------------------------------------------------------------------------------------------------------


def fmt(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def markdown(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| name | vtfusion | peer | ratio | unit | params M (vtfusion / peer) | note |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
        params = " / ".join(fmt(r[key] / 1e6) if r.get(key) else "-" for key in ("vtfusion_params", "peer_params"))
        lines.append(
            f"| {r['name']} | {fmt(r['vtfusion'])} | {fmt(r['peer'])} | {ratio} | {r['unit']} | "
            f"{params if 'vtfusion_params' in r else ''} | {r.get('note', '')} |"
        )
    return "\n".join(lines)


def header(threads: int, wall: float) -> str:
    return (
        f"vtfusion vs transformers {transformers.__version__} peers, torch {torch.__version__}, fp32, "
        f"{threads} of {CORES} threads, {platform.processor() or platform.machine()}; run took {wall:.0f} s.\n"
        "Matched size: image 64, patch 8, hidden 192, 4 layers, 3 heads, MLP 768, text 32, batch 16, vocab 30524, "
        f"no dropout. vtfusion: {NUM_FUSION_LAYERS} cross-attention fusion layers (its ITM step then needs the FLOPs "
        "of BLIP's ITM, whose 4-layer text encoder cross-attends in every layer, on the same 3B pairs; vtfusion also "
        f"computes ITC), a {NUM_DECODER_LAYERS}-layer decoder with cross-attention in every layer (as BLIP's). "
        "ratio > 1: vtfusion better."
    )


def main_job_rows(results_path: Path) -> list[dict]:
    """The main job's wall time and headline metrics (`make demo` writes them), or a row saying how to get them."""
    if not results_path.exists():
        return [row("main_job", None, None, f"run `make demo` first ({results_path} is missing)")]
    results = json.loads(results_path.read_text())
    units = {"wall_time_s": "s", "matmul_gflops": "GFLOP/s", "train_tflops": "TFLOP (model FLOPs of training)"}
    names = ("wall_time_s", "matmul_gflops", "train_tflops", "retrieval_t2i_r1", "retrieval_i2t_r1", "vqa_accuracy")
    names += ("entailment_accuracy", "entailment_relational_accuracy", "bleu4", "cider", "rouge_l")
    return [
        row(f"main_job_{name}", results[name], None, units.get(name, "metric"), value=results[name])
        for name in names
        if name in results
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: all cores, 1 if they are busy)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per comparison (medians reported)")
    parser.add_argument("--gallery-sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile comparison")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    parser.add_argument("--main-job-results", type=Path, default=Path("outputs/vtfusion-synthshapes/results.json"))
    args = parser.parse_args()
    logging.set_verbosity_error()
    start = time.perf_counter()
    args.threads = args.threads or auto_threads()
    torch.set_num_threads(args.threads)

    training_rss, retrieval = measure_memory(args.gallery_sizes, retrieval_rounds=2)
    rows, steps = training_rows(args.rounds)
    rows += memory_rows(training_rss)
    rows += generation_rows(args.rounds)
    rows += retrieval_rows(retrieval, args.gallery_sizes)
    rows += threads_rows(args.threads, steps, args.rounds)
    if not args.no_compile:
        rows += compile_rows(steps, args.rounds)

    rows += ann_rows(args.main_job_results.parent, args.rounds)
    rows += cpu_inference_rows(args.main_job_results.parent, args.rounds)
    rows += busy_rows()
    rows += main_job_rows(args.main_job_results)
    wall = time.perf_counter() - start
    rows.append(row("bench_wall_time", wall, None, "s", value=wall))
    args.output.write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows, header(args.threads, wall)))


if __name__ == "__main__":
    main()
