"""A run never resumes from a half-written checkpoint, and a non-finite loss stops it before the weights change."""

import pytest
import torch
from torch import nn
from transformers import TrainingArguments

from training.train import VTFusionTrainer, last_complete_checkpoint


def test_resume_skips_a_checkpoint_the_run_was_killed_while_writing(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"")
        if complete:  # Trainer writes trainer_state.json last
            (folder / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-4")


class LossOf(nn.Module):
    """A model whose loss is `value` times its one weight."""

    def __init__(self, value: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.value = value

    def forward(self, x, **kwargs):
        return {"loss": (self.weight * self.value * x).sum()}


def test_nan_loss_stops_training_at_its_step_with_the_weights_untouched(tmp_path):
    model = LossOf(float("nan"))
    args = TrainingArguments(tmp_path, max_steps=3, per_device_train_batch_size=1, report_to="none", use_cpu=True)
    trainer = VTFusionTrainer(model=model, args=args, train_dataset=[{"x": torch.ones(1)}] * 3)
    with pytest.raises(FloatingPointError, match="at step 1"):
        trainer.train()
    assert model.weight.item() == 1.0
