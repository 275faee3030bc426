"""Top operators of one vtfusion (or peer) workload under torch.profiler: what bounds a benchmark row.

python -m benchmarks.profile itc|itm|caption|pretraining|generate|beam3 [--peer] [--threads N] [--rows 15]
"""

import argparse

import torch
from torch.profiler import ProfilerActivity, profile
from transformers.utils import logging

from .models import build, random_batch
from .run import GENERATE_IMAGES, GENERATE_TOKENS
from .workloads import OBJECTIVES, TrainStep, caption_generator


def workload(name: str, side: str):
    if name in ("generate", "beam3"):
        model = build("vtfusion_captioning" if side == "vtfusion" else "blip_captioning").eval()
        pixel_values = random_batch(GENERATE_IMAGES)["pixel_values"]
        return caption_generator(model, pixel_values, GENERATE_TOKENS, num_beams=3 if name == "beam3" else 1)
    model_name, loss_fn = OBJECTIVES[name][side]
    return TrainStep(build(model_name).train(), loss_fn, random_batch())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=[*OBJECTIVES, "generate", "beam3"])
    parser.add_argument("--peer", action="store_true", help="profile the transformers peer instead of vtfusion")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    run = workload(args.workload, "peer" if args.peer else "vtfusion")
    run()
    run()  # warm: first calls allocate and pick kernels
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        run()
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
