"""vtfusion and its transformers peers (CLIP, BLIP) built at one matched size, and random batches for them.

Every tower: image 64, patch 8, hidden 192, 4 layers, 3 heads, MLP 768; text length 32, vocabulary 30524; no
dropout anywhere (CLIP's and BLIP's defaults). How the fusion and decoder depths are matched to BLIP:

- ITM: BLIP runs its 4-layer text encoder, with cross-attention in every layer, on the 3B fused pairs. vtfusion runs
  its 4-layer text encoder (no cross-attention) on the B texts, then `NUM_FUSION_LAYERS` cross-attention layers on
  the 3B pairs. With 3 fusion layers, and every pair computing its own image keys/values as BLIP's do, the two ITM
  steps need the same matmul FLOPs (36.1 vs 37.7 GFLOP per step of 16, counted with FlopCounterMode), vtfusion's
  including the ITC loss. vtfusion computes each image's keys/values once for all its pairs: 32.9 GFLOP.
- Captioning: BLIP's text decoder has 4 layers, each with cross-attention to the image tokens; vtfusion's decoder has
  `NUM_DECODER_LAYERS` = 4 such layers.
"""

import torch
from transformers import BlipConfig, BlipForConditionalGeneration, BlipForImageTextRetrieval, CLIPConfig, CLIPModel

from modeling_vtfusion import (
    VTFusionConfig,
    VTFusionForConditionalGeneration,
    VTFusionForImageTextRetrieval,
    VTFusionForPreTraining,
    VTFusionModel,
)


IMAGE_SIZE, PATCH_SIZE, TEXT_LENGTH, BATCH_SIZE, VOCAB_SIZE = 64, 8, 32, 16, 30524
NUM_FUSION_LAYERS, NUM_DECODER_LAYERS = 3, 4
CLS_ID, SEP_ID, PAD_ID = 101, 102, 0
BLIP_BOS_ID = 30522  # BLIP's [DEC] token starts its decoder input

TOWER = {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 3, "intermediate_size": 768}
VISION = {**TOWER, "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE}
TEXT = {**TOWER, "vocab_size": VOCAB_SIZE, "max_position_embeddings": 64}
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def vtfusion_config(**overrides) -> VTFusionConfig:
    return VTFusionConfig(
        vision_config={"model_type": "vit", **VISION, **NO_DROPOUT},
        text_config={"model_type": "bert", **TEXT, **NO_DROPOUT},
        fusion_type="cross_attention",
        num_fusion_layers=NUM_FUSION_LAYERS,
        decoder_num_hidden_layers=NUM_DECODER_LAYERS,
        projection_dim=256,
        pad_token_id=PAD_ID,
        bos_token_id=CLS_ID,
        eos_token_id=SEP_ID,
        **overrides,
    )


def clip_config() -> CLIPConfig:
    text = {**TEXT, "max_position_embeddings": TEXT_LENGTH, "bos_token_id": CLS_ID, "eos_token_id": SEP_ID}
    return CLIPConfig(vision_config=dict(VISION), text_config=text, projection_dim=256)


def blip_config(**text_overrides) -> BlipConfig:
    return BlipConfig(vision_config=dict(VISION), text_config={**TEXT, **text_overrides}, image_text_hidden_size=256)


# Generation's floor: the captioning models with a decoder 8x narrower (depth, heads, vocabulary and vision tower
# unchanged), whose products cost next to nothing. A `generate()` call then costs what no decoder kernel can remove:
# encoding the image, `generate()`'s own work on the logits, and the per-operator overhead of each decoding step.
FLOOR_WIDTH = {"hidden_size": 24, "intermediate_size": 96}


BUILDERS = {
    "vtfusion_model": lambda: VTFusionModel(vtfusion_config()),
    "vtfusion_retrieval": lambda: VTFusionForImageTextRetrieval(vtfusion_config()),
    "vtfusion_captioning": lambda: VTFusionForConditionalGeneration(vtfusion_config()),
    "vtfusion_pretraining": lambda: VTFusionForPreTraining(vtfusion_config()),
    "clip": lambda: CLIPModel(clip_config()),
    "blip_retrieval": lambda: BlipForImageTextRetrieval(blip_config()),
    "blip_captioning": lambda: BlipForConditionalGeneration(blip_config()),
    "vtfusion_captioning_floor": lambda: VTFusionForConditionalGeneration(
        vtfusion_config(
            decoder_hidden_size=FLOOR_WIDTH["hidden_size"], decoder_intermediate_size=FLOOR_WIDTH["intermediate_size"]
        )
    ),
    "blip_captioning_floor": lambda: BlipForConditionalGeneration(blip_config(**FLOOR_WIDTH)),
}


def build(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return BUILDERS[name]()


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def random_batch(batch_size: int = BATCH_SIZE, length: int = TEXT_LENGTH, seed: int = 0) -> dict:
    """Random pixels [B, 3, 64, 64] and captions "[CLS] w.. [SEP] [PAD].." of 16 to `length` tokens."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(length // 2, length + 1, (batch_size,), generator=generator)
    lengths[0] = length  # the longest caption sets the padded length
    input_ids = torch.randint(1000, VOCAB_SIZE - 2, (batch_size, length), generator=generator)
    positions = torch.arange(length)[None]
    attention_mask = (positions < lengths[:, None]).long()
    input_ids[:, 0] = CLS_ID
    input_ids[positions == lengths[:, None] - 1] = SEP_ID
    input_ids = input_ids.masked_fill(attention_mask == 0, PAD_ID)
    pixel_values = torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}
