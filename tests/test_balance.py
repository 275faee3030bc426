"""Imbalanced classes: class weights in the classification loss, saved with the checkpoint, and a sampler that
draws every class equally often, on one process and on two."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_models import random_batch, tiny_config

from modeling_vtfusion import VTFusionConfig, VTFusionForSequenceClassification
from training.balance import balanced_sampler, class_weights


REPO_ROOT = Path(__file__).resolve().parents[1]
RARE = [0] * 90 + [1] * 10


def test_inverse_frequency_weights_are_one_over_the_count_with_mean_one():
    assert class_weights(RARE, 2, "inverse_frequency") == pytest.approx([0.2, 1.8])


def test_effective_number_weights_lie_between_none_and_inverse_frequency():
    rare_weight = class_weights(RARE, 2, "effective_number")[1]
    assert 1.0 < rare_weight < 1.8


@pytest.mark.parametrize("method", ["inverse_frequency", "effective_number"])
def test_balanced_classes_get_weights_of_one(method):
    assert class_weights([0, 1, 2] * 5, 3, method) == pytest.approx([1.0, 1.0, 1.0])


def test_a_class_without_training_rows_is_named():
    with pytest.raises(ValueError, match=r"Classes \[2\] have no training row"):
        class_weights([0, 1], 3, "inverse_frequency")


def test_the_config_refuses_weights_that_do_not_fit_the_labels():
    with pytest.raises(ValueError, match="one positive weight per label"):
        tiny_config(num_labels=3, class_weights=[1.0, 2.0])


def test_class_weights_weigh_the_loss_and_travel_with_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = VTFusionForSequenceClassification(tiny_config(class_weights=[0.2, 1.8])).eval()
    batch, labels = random_batch(), torch.tensor([0, 0, 0, 1])
    with torch.no_grad():
        out = model(**batch, labels=labels)
    expected = F.cross_entropy(out.logits, labels, weight=torch.tensor([0.2, 1.8]))
    torch.testing.assert_close(out.loss, expected)
    assert not torch.allclose(out.loss, F.cross_entropy(out.logits, labels))
    model.save_pretrained(tmp_path)
    assert VTFusionConfig.from_pretrained(tmp_path).class_weights == [0.2, 1.8]


def test_the_balanced_sampler_draws_each_class_about_equally_often():
    labels = RARE * 50
    drawn = [labels[i] for i in balanced_sampler(labels, seed=0)]
    assert len(drawn) == len(labels)
    assert sum(drawn) / len(drawn) == pytest.approx(0.5, abs=0.03)  # against 0.1 in the data


def test_two_processes_share_the_balanced_draw_of_one(tmp_path):
    script = REPO_ROOT / "tests" / "sampler_on_processes.py"
    config = REPO_ROOT / "training" / "configs" / "cpu_2proc.yaml"
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one")], env=env, cwd=REPO_ROOT)
    two = subprocess.run(
        [*launch, "--main_process_port", "29521", str(script), str(tmp_path / "two")],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]

    single = json.loads((tmp_path / "one" / "rank0.json").read_text())
    rank0, rank1 = (json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1))
    interleaved = [batch for pair in zip(rank0, rank1) for batch in pair]
    assert interleaved == single  # process r takes batches r, r + 2, ... of the one draw
    assert sum(i >= 36 for batch in single for i in batch) >= 10  # the rare class, 4 of 40 rows, drawn ~20 times
