"""Run under `accelerate launch` (or alone): the row indices `VTFusionTrainer`'s training dataloader yields with
`--balanced_sampling`'s sampler over `LABELS`, one epoch; each process writes its batches to argv[1]/rank<R>.json."""

import json
import os
import sys

import torch
from transformers import TrainingArguments

from training.balance import balanced_sampler
from training.train import VTFusionTrainer, use_cpu_without_accelerator


LABELS = [0] * 36 + [1] * 4  # class 1 is 9x rarer
BATCH_SIZE = 4


def collate(rows: list[dict]) -> dict:
    return {"index": torch.tensor([row["index"] for row in rows])}


if __name__ == "__main__":
    use_cpu_without_accelerator()
    args = TrainingArguments(
        output_dir=sys.argv[1],
        per_device_train_batch_size=BATCH_SIZE,
        remove_unused_columns=False,
        report_to="none",
        dataloader_pin_memory=False,
    )
    trainer = VTFusionTrainer(
        model=torch.nn.Linear(1, 1),
        args=args,
        train_dataset=[{"index": i} for i in range(len(LABELS))],
        data_collator=collate,
        train_sampler=balanced_sampler(LABELS, seed=0),
    )
    batches = [batch["index"].tolist() for batch in trainer.get_train_dataloader()]
    with open(os.path.join(sys.argv[1], f"rank{args.process_index}.json"), "w") as file:
        json.dump(batches, file)
