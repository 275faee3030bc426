"""Parameter count and training-step time of every vtfusion head at the default config.

One step is forward + backward + AdamW step (fused, as `Trainer` uses by default) on a random batch of 64px images
and 32-token texts over the default 30,522-word vocabulary. Reports the median over `--steps` timed steps after
`--warmup` untimed ones, with the min and max, because a shared machine makes single timings noisy.

    python benchmarks/head_step_times.py --batch-size 16 --threads 2
"""

import argparse
import statistics
import time

import torch

from modeling_vtfusion import (
    VTFusionConfig,
    VTFusionForConditionalGeneration,
    VTFusionForImageTextRetrieval,
    VTFusionForPreTraining,
    VTFusionForSequenceClassification,
)
from modeling_vtfusion.modeling_vtfusion import caption_labels


TEXT_LENGTH = 32
ANSWER_LENGTH = 4


def random_inputs(config: VTFusionConfig, batch_size: int) -> dict:
    """[CLS] w1 .. wn [SEP] [PAD].. texts (a quarter of them half padding) with random 64px images."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, config.vocab_size, (batch_size, TEXT_LENGTH), generator=generator)
    ids[:, 0], ids[:, -1] = config.bos_token_id, config.eos_token_id
    mask = torch.ones_like(ids)
    padded = slice(0, batch_size // 4)
    ids[padded, TEXT_LENGTH // 2] = config.eos_token_id
    ids[padded, TEXT_LENGTH // 2 + 1 :], mask[padded, TEXT_LENGTH // 2 + 1 :] = config.pad_token_id, 0
    size = config.vision_config.image_size
    pixel_values = torch.randn(batch_size, 3, size, size, generator=generator)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixel_values}


def workloads(config: VTFusionConfig, batch_size: int):
    """(row name, head class, training inputs) for each head and task."""
    batch = random_inputs(config, batch_size)
    answers = batch["input_ids"][:, 1 : ANSWER_LENGTH + 1].clone()
    answers[:, -1] = config.eos_token_id
    captions = caption_labels(batch["input_ids"], batch["attention_mask"])
    return [
        ("retrieval (ITC + ITM)", VTFusionForImageTextRetrieval, batch),
        ("classification", VTFusionForSequenceClassification, dict(batch, labels=torch.arange(batch_size) % 2)),
        ("generation: captioning", VTFusionForConditionalGeneration,
         {"pixel_values": batch["pixel_values"], "labels": captions}),
        ("generation: VQA", VTFusionForConditionalGeneration, dict(batch, labels=answers)),
        ("pretraining (ITC + ITM + LM)", VTFusionForPreTraining, batch),
    ]  # fmt: skip


def step_times(model, inputs: dict, steps: int, warmup: int) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    model.train()
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = VTFusionConfig()
    print(
        f"Default VTFusionConfig ({config.fusion_type} fusion, vocab {config.vocab_size}), batch {args.batch_size}, "
        f"{config.vision_config.image_size}px images, {TEXT_LENGTH}-token texts, torch {torch.__version__} on "
        f"{args.threads} CPU thread(s); median of {args.steps} steps after {args.warmup} warm-up steps.\n"
    )
    print("| head | parameters | step (forward + backward + AdamW) median | min - max |")
    print("| --- | ---: | ---: | ---: |")
    for name, head, inputs in workloads(config, args.batch_size):
        torch.manual_seed(0)
        model = head(VTFusionConfig())
        parameters = sum(p.numel() for p in model.parameters())  # tied weights counted once
        times = step_times(model, inputs, args.steps, args.warmup)
        print(
            f"| {name} | {parameters / 1e6:.2f} M | {1000 * statistics.median(times):.0f} ms "
            f"| {1000 * min(times):.0f} - {1000 * max(times):.0f} ms |"
        )


if __name__ == "__main__":
    main()
