"""Parameter-efficient fine-tuning with `peft` LoRA: on every head, in `Trainer` with gradient checkpointing, and
reloaded onto a remote-code base with identical outputs."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from tiny_models import TINY_TEXT, random_batch, tiny_config
from transformers import Trainer, TrainingArguments

from modeling_vtfusion import (
    VTFusionForConditionalGeneration,
    VTFusionForImageTextRetrieval,
    VTFusionForPreTraining,
    VTFusionForSequenceClassification,
    VTFusionModel,
)


REPO = Path(__file__).resolve().parents[1]
# README's narrower choice: the attention queries and values of both towers (BERT / ViT name them `query` / `value`),
# of the fusion layers and of the decoder (`q_proj` / `v_proj`)
ATTENTION_ONLY = ["query", "value", "q_proj", "v_proj"]
HEADS = {
    VTFusionModel: {"return_loss": True},
    VTFusionForImageTextRetrieval: {},
    VTFusionForSequenceClassification: {"labels": torch.tensor([0, 1, 0, 1])},
    VTFusionForConditionalGeneration: {"labels": random_batch()["input_ids"][:, 1:]},
    VTFusionForPreTraining: {},
}
# what a new head trains in full next to the adapters (as peft's task types do for classifiers)
MODULES_TO_SAVE = {VTFusionForSequenceClassification: ["classifier"]}


def lora_model(head, target_modules="all-linear"):
    torch.manual_seed(0)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=target_modules,
        modules_to_save=MODULES_TO_SAVE.get(head),
        init_lora_weights=False,
    )
    return get_peft_model(head(tiny_config()), config)


class Batches(torch.utils.data.Dataset):
    """The same batch every step (one item = a whole batch; the collator unwraps it)."""

    def __init__(self, batch: dict, steps: int):
        self.batch, self.steps = batch, steps

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        return self.batch


def train_two_steps(model, batch, output_dir):
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=1,
        max_steps=2,
        learning_rate=1e-2,
        gradient_checkpointing=True,
        remove_unused_columns=False,
        report_to="none",
        save_strategy="no",
        dataloader_pin_memory=False,
        use_cpu=True,
    )
    Trainer(model=model, args=args, train_dataset=Batches(batch, 2), data_collator=lambda items: items[0]).train()


@pytest.mark.parametrize("head", list(HEADS), ids=[head.__name__ for head in HEADS])
def test_lora_on_every_head_trains_only_the_adapters_with_gradient_checkpointing(head, tmp_path):
    model = lora_model(head)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or "modules_to_save" in name for name in trainable)
    for part in ("vision_model", "text_model", "fusion"):  # the towers and the fusion layers get adapters
        assert any(part in name for name in trainable), part
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    lora = {name: p.detach().clone() for name, p in model.named_parameters() if "lora_B" in name}

    train_two_steps(model, random_batch() | HEADS[head], tmp_path)

    after = dict(model.named_parameters())
    assert all(torch.equal(after[name], value) for name, value in frozen.items())
    assert any(not torch.equal(after[name], value) for name, value in lora.items())


def test_the_narrower_choice_adapts_attention_queries_and_values_only():
    model = lora_model(VTFusionForConditionalGeneration, ATTENTION_ONLY)
    adapted = {name.split(".lora_")[0] for name, _ in model.named_parameters() if "lora_A" in name}
    assert adapted and all(name.endswith((".query", ".value", ".q_proj", ".v_proj")) for name in adapted)
    assert {"vision_model", "text_model", "fusion", "text_decoder"} <= {
        part for name in adapted for part in ("vision_model", "text_model", "fusion", "text_decoder") if part in name
    }


# Runs in a fresh interpreter that cannot import vtfusion: the base comes as remote code, the adapters from peft.
LOAD_ADAPTERS = textwrap.dedent(
    """
    import sys
    sys.modules["modeling_vtfusion"] = None
    sys.modules["training"] = None
    sys.path = [p for p in sys.path if p not in ("", {repo!r})]
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained({base!r}, trust_remote_code=True)
    model = PeftModel.from_pretrained(base, {adapters!r}).eval()
    batch = torch.load({batch!r})
    with torch.no_grad():
        torch.save(model(**batch).logits, {out!r})
    """
)


def test_adapters_reload_onto_a_remote_code_base_with_identical_outputs(tmp_path):
    torch.manual_seed(0)
    base = VTFusionForSequenceClassification(tiny_config(text_config=dict(TINY_TEXT)))
    base.save_pretrained(tmp_path / "base")
    model = get_peft_model(
        base, LoraConfig(r=4, target_modules="all-linear", modules_to_save=["classifier"], init_lora_weights=False)
    )
    batch = random_batch()
    train_two_steps(model, batch | {"labels": torch.tensor([0, 1, 0, 1])}, tmp_path / "run")
    model.save_pretrained(tmp_path / "adapters")
    with torch.no_grad():
        expected = model.eval()(**batch).logits
    torch.save(batch, tmp_path / "batch.pt")

    script = LOAD_ADAPTERS.format(
        repo=str(REPO),
        base=str(tmp_path / "base"),
        adapters=str(tmp_path / "adapters"),
        batch=str(tmp_path / "batch.pt"),
        out=str(tmp_path / "out.pt"),
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=240)

    assert done.returncode == 0, done.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected, atol=1e-6, rtol=0)
