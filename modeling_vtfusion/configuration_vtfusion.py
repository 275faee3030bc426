"""VTFusion configuration: two pretrained-or-random encoders, an alignment space, a fusion module and a decoder."""

from .compat import MINIMUM_TRANSFORMERS  # noqa: F401  (first: an unsupported transformers fails here, with the fix)


# isort: split
from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .fusion import FUSION_STRATEGIES, FUSION_TYPES, POOLINGS


# Small towers so that `VTFusionConfig()` builds a model that trains on a laptop CPU (64px images, 8px patches).
DEFAULT_VISION_CONFIG = {
    "image_size": 64,
    "patch_size": 8,
    "hidden_size": 192,
    "num_hidden_layers": 4,
    "num_attention_heads": 3,
    "intermediate_size": 768,
}
DEFAULT_TEXT_CONFIG = {
    "hidden_size": 192,
    "num_hidden_layers": 4,
    "num_attention_heads": 3,
    "intermediate_size": 768,
    "max_position_embeddings": 128,
}


def encoder_hidden_size(config: PreTrainedConfig) -> int:
    """Width of an encoder's output tokens: `hidden_size` for transformers, the last stage width for CNNs."""
    if getattr(config, "hidden_sizes", None):  # ResNet, ConvNeXt, ...
        return config.hidden_sizes[-1]
    return config.hidden_size


def special_token_ids(tokenizer) -> dict[str, int | None]:
    """A tokenizer's padding, start and end ids under vtfusion's config names: [CLS] / [SEP] where the tokenizer has
    them (BERT-style), else <s> / </s> (RoBERTa, GPT-style)."""
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    return {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": start, "eos_token_id": end}


@strict
class VTFusionConfig(PreTrainedConfig):
    r"""
    Configuration of a VTFusion model: a vision encoder and a text encoder (any `AutoModel` backbone), projections into
    a shared space of size `projection_dim` with a learned temperature, a fusion module chosen by `fusion_type`, and a
    causal text decoder used by the generation and pre-training heads.

    Args:
        vision_config / text_config (`dict` or `PreTrainedConfig`): encoder configs of any registered `model_type`
            (ViT, DeiT, CLIP vision, ResNet, ConvNeXt / BERT, RoBERTa, MiniLM, ...). Default: small ViT and BERT.
        projection_dim (`int`): size of the shared image-text embedding space.
        logit_scale_init_value (`float`): initial value of the learned log-temperature (CLIP: log(1/0.07)).
        fusion_type (`str`): one of `FUSION_TYPES`, each described in `fusion.FUSION_STRATEGIES`:
            `"cross_attention"` (ALBEF / BLIP), `"co_attention"` (ViLBERT / LXMERT), `"concat"` (ViLT), `"weighted"`
            (gated multimodal unit) and `"late"` (no interaction).
        fusion_pooling (`str`): how the token-level fusions (cross-attention, co-attention, concat) pool a pair's fused
            tokens into the vector the ITM and classification heads read: `"mean"` or `"max"` (per feature). The
            default is the mean, what every checkpoint saved before this option pooled with, so they load unchanged;
            models trained from scratch by `training.train` use the max, which learns matching far sooner
            (`fusion.TransformerFusion`).
        num_fusion_layers, fusion_hidden_size, fusion_num_attention_heads, fusion_intermediate_size: size of the
            fusion module; `None` sizes follow the text encoder (hidden size, heads) and 4x hidden for the MLP.
        hidden_dropout_prob, attention_dropout: dropout in fusion and decoder layers.
        modality_dropout (`float`): probability, during training, of dropping one whole modality of a pair from the
            fusion input so the model learns to cope with a missing modality.
        decoder_*: size of the causal text decoder; `None` sizes follow the fusion module.
        max_decoder_position_embeddings (`int`): longest sequence the decoder generates.
        use_cache (`bool`): whether the decoder returns its key/value cache when called without `labels`.
        itc_loss_weight, itm_loss_weight, lm_loss_weight: weights of the pre-training objectives.
        mlm_loss_weight (`float`): weight of masked language modelling through the fusion module (ALBEF / ViLT),
            computed when a pre-training batch carries `mlm_input_ids` and `mlm_labels`.
        label_smoothing (`float`): label smoothing of the contrastive (ITC) loss.
        class_weights (`list[float]`, *optional*): one weight per label in the single-label classification loss
            (imbalanced classes; `training.train --class_weighting` computes them from the training labels).
        freeze_vision_encoder, freeze_text_encoder (`bool`): keep the encoder weights fixed during training.
    """

    model_type = "vtfusion"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(AutoConfig, model_type="vit", init_kwargs=DEFAULT_VISION_CONFIG),
        "text_config": SubConfigSpec(AutoConfig, model_type="bert", init_kwargs=DEFAULT_TEXT_CONFIG),
    }
    # The text *output* side is vtfusion's own decoder (`get_text_config(decoder=True)` is this config): generation
    # utilities size caches and read widths from these names, which here mean the decoder's.
    attribute_map = {
        "num_hidden_layers": "decoder_num_hidden_layers",
        "hidden_size": "decoder_hidden_size",
        "num_attention_heads": "decoder_num_attention_heads",
    }

    vision_config: PreTrainedConfig | dict | None = None
    text_config: PreTrainedConfig | dict | None = None
    projection_dim: int = 256
    logit_scale_init_value: float = 2.6592
    fusion_type: str = "cross_attention"
    fusion_pooling: str = "mean"
    num_fusion_layers: int = 2
    fusion_hidden_size: int | None = None
    fusion_num_attention_heads: int | None = None
    fusion_intermediate_size: int | None = None
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_dropout: float = 0.0
    modality_dropout: float = 0.0
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    decoder_hidden_size: int | None = None
    decoder_num_hidden_layers: int = 2
    decoder_num_attention_heads: int | None = None
    decoder_intermediate_size: int | None = None
    max_decoder_position_embeddings: int = 64
    vocab_size: int | None = None
    itc_loss_weight: float = 1.0
    itm_loss_weight: float = 1.0
    lm_loss_weight: float = 1.0
    mlm_loss_weight: float = 1.0
    label_smoothing: float = 0.0
    class_weights: list[float] | None = None
    freeze_vision_encoder: bool = False
    freeze_text_encoder: bool = False
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    decoder_start_token_id: int | None = None
    tie_word_embeddings: bool = True
    use_cache: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        text = self.text_config
        self.fusion_hidden_size = self.fusion_hidden_size or text.hidden_size
        self.fusion_num_attention_heads = self.fusion_num_attention_heads or text.num_attention_heads
        self.fusion_intermediate_size = self.fusion_intermediate_size or 4 * self.fusion_hidden_size
        self.decoder_hidden_size = self.decoder_hidden_size or self.fusion_hidden_size
        self.decoder_num_attention_heads = self.decoder_num_attention_heads or self.fusion_num_attention_heads
        self.decoder_intermediate_size = self.decoder_intermediate_size or 4 * self.decoder_hidden_size
        self.vocab_size = self.vocab_size or text.vocab_size
        # Special ids not given follow the text encoder's config (RoBERTa: <s> 0, </s> 2). BERT configs name only the
        # padding id: their [CLS] / [SEP] ids belong to the tokenizer (`special_token_ids`), which
        # `from_vision_text_pretrained` and the training entry point read.
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(text, name, None))
        if self.decoder_start_token_id is None:
            self.decoder_start_token_id = self.bos_token_id
        self._check_values()

    def _check_values(self):
        """Values that cannot build a model fail here with a `ValueError` that says why and what to change."""
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            token_id = getattr(self, name)
            if token_id is not None and not 0 <= token_id < self.vocab_size:
                raise ValueError(
                    f"{name}={token_id} is outside the vocabulary of {self.vocab_size} tokens; take the special ids "
                    "from the tokenizer: VTFusionConfig(..., **special_token_ids(tokenizer))."
                )
        if self.fusion_type not in FUSION_TYPES:
            raise ValueError(f"Unknown fusion_type {self.fusion_type!r}; choose one of {', '.join(FUSION_TYPES)}.")
        if self.fusion_pooling not in POOLINGS:
            raise ValueError(f"Unknown fusion_pooling {self.fusion_pooling!r}; choose one of {', '.join(POOLINGS)}.")
        for prefix, width, heads in (
            ("fusion", self.fusion_hidden_size, self.fusion_num_attention_heads),
            ("decoder", self.decoder_hidden_size, self.decoder_num_attention_heads),
        ):
            if width is not None and heads is not None and width % heads != 0:
                raise ValueError(
                    f"{prefix}_hidden_size ({width}) must be divisible by {prefix}_num_attention_heads ({heads}) "
                    f"so that every head gets {prefix}_hidden_size / heads dimensions; change one of the two."
                )
        for name in ("modality_dropout", "hidden_dropout_prob", "attention_dropout", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        if self.class_weights is not None and (
            len(self.class_weights) != self.num_labels or min(self.class_weights) <= 0
        ):
            raise ValueError(
                f"class_weights needs one positive weight per label ({self.num_labels} labels), got "
                f"{self.class_weights}; set num_labels (or id2label) with it."
            )
        if self.num_fusion_layers < 1 and FUSION_STRATEGIES[self.fusion_type].token_interaction:
            raise ValueError(f"fusion_type={self.fusion_type!r} needs num_fusion_layers >= 1.")

    def get_text_config(self, decoder=None, encoder=None) -> PreTrainedConfig:
        # The text *output* side is vtfusion's own decoder, whose sizes live on this config (`num_hidden_layers`,
        # `vocab_size`), not the text encoder's.
        if decoder and not encoder:
            return self
        return super().get_text_config(decoder=decoder, encoder=encoder)


__all__ = ["VTFusionConfig", "FUSION_TYPES", "encoder_hidden_size", "special_token_ids"]
