"""Tiny random vtfusion configs and batches: a full model in ~100k parameters, a forward in milliseconds."""

import torch

from modeling_vtfusion import VTFusionConfig


TINY_VISION = {
    "model_type": "vit",
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}
TINY_TEXT = {
    "model_type": "bert",
    "vocab_size": 300,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}


# `training.train` flags for a tiny model from scratch, and for a quiet run.
TINY_MODEL_ARGS = [
    "--hidden_size=32",
    "--num_hidden_layers=1",
    "--num_attention_heads=2",
    "--num_fusion_layers=1",
    "--decoder_num_hidden_layers=1",
    "--projection_dim=16",
    "--image_size=32",
    "--tokenizer_vocab_size=200",
]
QUIET_ARGS = ["--report_to=none", "--disable_tqdm=true", "--dataloader_pin_memory=false", "--log_level=warning"]


def tiny_config(**overrides) -> VTFusionConfig:
    """A tiny config: 32px ViT and a 300-word BERT, BERT-style special ids of the tests' WordPiece vocab."""
    values = dict(
        vision_config=dict(TINY_VISION),
        text_config=dict(TINY_TEXT),
        projection_dim=16,
        num_fusion_layers=1,
        decoder_num_hidden_layers=1,
        max_decoder_position_embeddings=32,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    values.update(overrides)
    return VTFusionConfig(**values)


def random_batch(batch_size=4, length=10, image_size=32, vocab_size=300, seed=0):
    """Paired random pixels and token ids ([CLS] ... [SEP] [PAD]...), with the last row padded."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (batch_size, length), generator=generator)
    input_ids[:, 0] = 2
    input_ids[:, -1] = 3
    attention_mask = torch.ones_like(input_ids)
    if batch_size > 1:
        input_ids[-1, length // 2] = 3
        input_ids[-1, length // 2 + 1 :] = 0
        attention_mask[-1, length // 2 + 1 :] = 0
    pixel_values = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}
