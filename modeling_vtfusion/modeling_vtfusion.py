"""VTFusion: two encoders aligned in a shared space, a configurable fusion module, and task heads on top.

An image goes pixels -> vision encoder -> image tokens -> (projection -> image_embeds for ITC) and
(image_to_fusion -> fusion width); a text goes the same way through the text encoder. `fuse` mixes the two token
sequences with the strategy of `config.fusion_type` (see `fusion.py`). Heads read the pooled fused vector (ITM,
classification) or decode text from the fused tokens (captioning, VQA).
"""

from .compat import MINIMUM_TRANSFORMERS  # noqa: F401  (first: an unsupported transformers fails here, with the fix)


# isort: split
import copy
import inspect
from dataclasses import dataclass
from typing import Unpack

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.loss.loss_utils import ForCausalLMLoss, ForMaskedLMLoss, ForSequenceClassificationLoss
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import (
    BaseModelOutputWithPastAndCrossAttentions,
    BaseModelOutputWithPooling,
    Seq2SeqLMOutput,
    SequenceClassifierOutput,
)
from transformers.models.auto.modeling_auto import MODEL_MAPPING
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_vtfusion import VTFusionConfig, encoder_hidden_size, special_token_ids
from .fusion import (
    FUSION_STRATEGIES,
    FusionOutput,
    LateFusion,
    VTFusionAttention,
    VTFusionLayer,
    additive_mask,
    build_fusion,
    masked_mean,
)
from .logits_process import with_eos_blocked_cheaply
from .packed_linear import PackedLinear
from .pipelines import CUSTOM_PIPELINES


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class VTFusionOutput(ModelOutput):
    """
    loss (`[]`): contrastive (ITC) loss, when `return_loss=True`.
    logits_per_image (`[num_images, num_texts]`) / logits_per_text (`[num_texts, num_images]`): scaled cosine
        similarities.
    text_embeds (`[num_texts, projection_dim]`) / image_embeds (`[num_images, projection_dim]`): L2-normalised
        embeddings in the shared space.
    fused_last_hidden_state (`[B, N, fusion_hidden_size]`), fused_attention_mask (`[B, N]`), fused_pooler_output
        (`[B, fusion_hidden_size]`): the fusion module's output, for paired inputs.
    cross_attentions (tuple of `[B, heads, num_text_tokens, num_image_tokens]`): text-to-image attention per fusion
        layer, with `output_attentions=True` (attention fusion types only).
    fusion_hidden_states (tuple of `[B, N, fusion_hidden_size]`): with `output_hidden_states=True`.
    text_model_output / vision_model_output: the encoders' own outputs.
    """

    loss: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    fused_pooler_output: torch.Tensor | None = None
    fused_last_hidden_state: torch.Tensor | None = None
    fused_attention_mask: torch.Tensor | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    fusion_hidden_states: tuple[torch.Tensor, ...] | None = None
    text_model_output: ModelOutput | None = None
    vision_model_output: ModelOutput | None = None

    def to_tuple(self):
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


@dataclass
class VTFusionRetrievalOutput(ModelOutput):
    """
    loss (`[]`): `itc_loss + itm_loss` (weighted by the config), for paired inputs.
    itm_logits (`[B, 2]`): match / no-match logits of the given pairs (index 1 = match).
    Other fields as in `VTFusionOutput`.
    """

    loss: torch.Tensor | None = None
    itc_loss: torch.Tensor | None = None
    itm_loss: torch.Tensor | None = None
    itm_logits: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class VTFusionEncoderOutput(ModelOutput):
    """What the decoder reads: memory tokens [B, N, H] and their mask [B, N] (image tokens, or fused image-text);
    on request the vision encoder's hidden states and attentions and the fusion module's (`hidden_states`: the
    vision encoder's then the fusion layers'; `attentions`: the vision encoder's then the fusion text-to-image maps)."""

    last_hidden_state: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class VTFusionPreTrainingOutput(ModelOutput):
    """loss = itc_loss_weight * itc_loss + itm_loss_weight * itm_loss + lm_loss_weight * lm_loss (+ mlm_loss_weight *
    mlm_loss when masked captions are given); each reported."""

    loss: torch.Tensor | None = None
    itc_loss: torch.Tensor | None = None
    itm_loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    itm_logits: torch.Tensor | None = None
    lm_logits: torch.Tensor | None = None


@dataclass
class VTFusionRetrievalFeatures(ModelOutput):
    """
    Images or texts encoded once for two-stage retrieval (`VTFusionForImageTextRetrieval.rank`).

    embeds (`[N, projection_dim]`): L2-normalised embeddings, compared by matrix product in the first (ITC) stage.
    tokens (`[N, L, encoder_width]`): encoder tokens, fused with the other side's candidates in the second (ITM) stage.
    attention_mask (`[N, L]`): the texts' padding mask; `None` for images.
    """

    embeds: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None


@dataclass
class VTFusionRankingOutput(ModelOutput):
    """
    indices (`[num_queries, k]`): each query's k gallery candidates, re-ranked by ITM, best first.
    scores (`[num_queries, k]`): ITM log-probability that the query and the candidate match, descending.
    itc_indices / itc_scores (`[num_queries, k]`): the first stage, top-k by scaled cosine similarity, best first.
    """

    indices: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    itc_indices: torch.Tensor | None = None
    itc_scores: torch.Tensor | None = None


# transformers 5.24 renamed the generation cache from `past_key_values` to `cache`, in model outputs and in what
# `generate()` passes to `forward`. The library's own output class carries the name of the release that is installed.
CACHE_NAME = "cache" if "cache" in Seq2SeqLMOutput.__dataclass_fields__ else "past_key_values"


# ----------------------------------------------------------------------------------------------------------------
# Losses and distributed helpers
# ----------------------------------------------------------------------------------------------------------------


def contrastive_loss(
    logits_per_text: torch.Tensor, label_smoothing: float = 0.0, image_present: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE over a [N, N] similarity matrix whose diagonal holds the positive pairs.

    `image_present` ([N] bool): where False, row i is a text without an image (its pixels a blank stand-in). That
    text has no positive image and the blank image no positive text, so neither is a query; the text still serves as
    a negative for every real image.
    """
    targets = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    if image_present is not None:
        targets = targets.masked_fill(~image_present, -100)
    text_loss = mean_cross_entropy(logits_per_text, targets, label_smoothing)
    image_loss = mean_cross_entropy(logits_per_text.t(), targets, label_smoothing)
    return (text_loss + image_loss) / 2


def mean_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy averaged over the targets that are not -100; 0 (still in the graph) when every one is."""
    total = F.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction="sum")
    return total / (targets != -100).sum().clamp(min=1)


def without_tanh_pooler(config: PreTrainedConfig) -> dict:
    """`add_pooling_layer=False` for encoders that take it (BERT, ViT, ...): their learned tanh pooler, trained for
    next-sentence prediction, saturates and stalls contrastive learning, and vtfusion pools [CLS] (images) and the
    token mean (texts) instead. Parameter-free or normalising poolers (CNN global pooling, CLIP's post-layernorm)
    are kept and used as their encoder defines them."""
    encoder_class = MODEL_MAPPING[type(config)]
    return {"add_pooling_layer": False} if "add_pooling_layer" in inspect.signature(encoder_class).parameters else {}


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every process along dim 0, keeping gradients (identity on one process)."""
    if world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def pad_to_global_length(tokens: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor):
    """Right-pad text tokens [B, T, H], mask and ids [B, T] to the longest T over all processes, so they gather."""
    if world_size() == 1:
        return tokens, mask, ids
    length = torch.tensor([tokens.shape[1]], device=tokens.device)
    dist.all_reduce(length, op=dist.ReduceOp.MAX)
    extra = int(length) - tokens.shape[1]
    return F.pad(tokens, (0, 0, 0, extra)), F.pad(mask, (0, extra)), F.pad(ids, (0, extra))


def sample_hard_negatives(similarity: torch.Tensor, forbidden: torch.Tensor, sample: bool = True) -> torch.Tensor:
    """For each row, draw one column with probability softmax(similarity) over the allowed columns (ALBEF / BLIP), or
    with `sample=False` (evaluation: the same call gives the same loss) take the most similar allowed column.

    `forbidden` marks the positives (and duplicates of them), which are never drawn; a row with every column
    forbidden has nothing to draw and gets an arbitrary index, which callers must ignore. Gumbel-max sampling over the
    global similarity matrix: every process draws the same noise, so a run on N processes samples exactly what one
    process with the global batch samples.
    """
    scores = similarity.float().masked_fill(forbidden, float("-inf"))
    if sample:
        scores = scores - torch.log(-torch.log(torch.rand_like(scores).clamp(1e-9, 1 - 1e-9)))  # + Gumbel noise
    return scores.argmax(dim=-1)


# ----------------------------------------------------------------------------------------------------------------
# Base classes
# ----------------------------------------------------------------------------------------------------------------


# Written into every checkpoint's config, whichever head saved it, so any vtfusion checkpoint loads in every Auto
# class and pipeline (the base model loads out of a head's weights through `base_model_prefix`).
AUTO_MAP = {
    "AutoConfig": "configuration_vtfusion.VTFusionConfig",
    "AutoProcessor": "processing_vtfusion.VTFusionProcessor",
    "AutoModel": "modeling_vtfusion.VTFusionModel",
    "AutoModelForZeroShotImageClassification": "modeling_vtfusion.VTFusionModel",
    "AutoModelForImageTextToText": "modeling_vtfusion.VTFusionForConditionalGeneration",
    "AutoModelForPreTraining": "modeling_vtfusion.VTFusionForPreTraining",
    "AutoModelForSequenceClassification": "modeling_vtfusion.VTFusionForSequenceClassification",
    # transformers has no retrieval Auto class; image-text matching is next-sentence prediction's image-text twin.
    "AutoModelForNextSentencePrediction": "modeling_vtfusion.VTFusionForImageTextRetrieval",
}


class VTFusionPreTrainedModel(PreTrainedModel):
    config: VTFusionConfig
    config_class = VTFusionConfig
    base_model_prefix = "vtfusion"
    main_input_name = "input_ids"  # the first argument of every forward but the generation head's
    input_modalities = ("image", "text")
    _no_split_modules = ["VTFusionLayer"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # The decoder's masks come from `masking_utils`, but the fusion layers' are 4-D additive key masks over two
    # modalities (and ITM shares one image's keys among pairs), which flash attention's varlen path cannot take.
    _supports_flash_attn = False
    _supports_attention_backend = True
    # What a head reads of the fusion module, if not everything (see `VTFusionModel.parameters_outside`).
    _reads_fused: str | None = None

    def __init__(self, config, *args, **kwargs):
        # Not `isinstance`: under trust_remote_code the config module can be imported twice under two names.
        if getattr(config, "model_type", None) != VTFusionConfig.model_type:
            raise ValueError(f"{type(self).__name__} needs a VTFusionConfig, got {type(config).__name__}.")
        super().__init__(config, *args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, whose config also names every Auto class (`AUTO_MAP`) and the custom
        pipelines (`pipelines.py`) that `pipeline(task, ...)` looks up, whichever head saves."""
        self.config.auto_map = dict(AUTO_MAP)
        self.config.custom_pipelines = {task: dict(entry) for task, entry in CUSTOM_PIPELINES.items()}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def post_init(self):
        super().post_init()
        self.freeze_untrained_parameters()

    def freeze_untrained_parameters(self) -> None:
        """Freeze what this model never trains: encoders the config freezes and, in a head, the parameters no output
        reads. Runs after `__init__` and again after `from_pretrained`, whose loading makes new parameters."""
        base = self.base_model  # `self.vtfusion` in a head, the model itself in VTFusionModel
        frozen = base.parameters_outside(self._reads_fused) if self._reads_fused else []
        if self.config.freeze_vision_encoder:
            frozen += list(base.vision_model.parameters())
        if self.config.freeze_text_encoder:
            frozen += list(base.text_model.parameters())
        for parameter in frozen:
            parameter.requires_grad_(False)

    def get_input_embeddings(self) -> nn.Embedding:
        """The text encoder's word embeddings: what `input_ids` index, in every head."""
        base = self.base_model  # `self.vtfusion` in a head, the model itself in VTFusionModel
        return base.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding):
        base = self.base_model  # `self.vtfusion` in a head, the model itself in VTFusionModel
        base.text_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Linear | None:
        """The caption decoder's LM head, in the heads that have one (tied to the decoder's embeddings)."""
        return getattr(self, "lm_head", None)

    def set_output_embeddings(self, new_embeddings: nn.Linear):
        self.lm_head = new_embeddings

    def _resize_token_embeddings(self, new_num_tokens, pad_to_multiple_of=None, mean_resizing=True):
        """One vocabulary serves the text encoder, the caption decoder and the LM / MLM heads: resized together.

        `PreTrainedModel` resizes the input embeddings (the text encoder's) and the output embeddings (`lm_head`), then
        ties `lm_head` to the decoder's embeddings again; the decoder's embeddings and `mlm_head` are resized here.
        """
        embeddings = super()._resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        vocab_size = embeddings.weight.shape[0]
        if (decoder := getattr(self, "text_decoder", None)) is not None:
            decoder.embed_tokens = self._get_resized_embeddings(
                decoder.embed_tokens, vocab_size, mean_resizing=mean_resizing
            )
        if (mlm_head := getattr(self, "mlm_head", None)) is not None:
            self.mlm_head = self._get_resized_lm_head(mlm_head, vocab_size, mean_resizing=mean_resizing)
        self.config.vocab_size = self.config.text_config.vocab_size = vocab_size
        return embeddings

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path, *model_args, use_safetensors: bool | None = True, **kwargs
    ):
        """`PreTrainedModel.from_pretrained`, from safetensors only: unpickling a downloaded `.bin` can run code."""
        if use_safetensors is False:
            raise ValueError(
                "vtfusion loads weights from safetensors only (use_safetensors=False was passed): unpickling a "
                "downloaded .bin/.pt file can run arbitrary code. Convert trusted weights once with save_pretrained."
            )
        try:
            loaded = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, use_safetensors=True, **kwargs
            )
        except OSError as error:
            if "safetensors" not in str(error):
                raise
            raise ValueError(
                f"{pretrained_model_name_or_path} has no safetensors weights (model.safetensors). vtfusion refuses "
                "pickled weights (pytorch_model.bin, *.pt) because unpickling can run arbitrary code. If you trust "
                "the files, load them once with plain torch in a sandbox and call save_pretrained to write "
                "safetensors."
            ) from error
        (loaded[0] if isinstance(loaded, tuple) else loaded).freeze_untrained_parameters()
        return loaded

    @torch.no_grad()
    def _init_weights(self, module):
        """The library's initialisation (normal `initializer_range` for linear and embedding layers, identity layer
        norms) plus vtfusion's own parameters; encoders initialise themselves (and loaded weights stay as loaded)."""
        super()._init_weights(module)
        if isinstance(module, VTFusionModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
        elif isinstance(module, LateFusion):
            init.zeros_(module.modality_logits)

    @classmethod
    def from_vision_text_pretrained(cls, vision_model_name_or_path: str, text_model_name_or_path: str, **kwargs):
        """Build any vtfusion head from two pretrained encoders (local folders or Hub ids); only new parts are random.

        `vision_*` / `text_*` keyword arguments go to the encoders' `from_pretrained` (e.g. `text_revision`); the
        rest configure vtfusion (`fusion_type="co_attention"`, `projection_dim=256`, ...). Special token ids not
        given come from the text encoder's tokenizer when it ships one.
        """
        vision_kwargs = {k[len("vision_") :]: kwargs.pop(k) for k in list(kwargs) if k.startswith("vision_")}
        text_kwargs = {k[len("text_") :]: kwargs.pop(k) for k in list(kwargs) if k.startswith("text_")}
        vision_kwargs.setdefault("use_safetensors", True)
        text_kwargs.setdefault("use_safetensors", True)
        vision_config = AutoConfig.from_pretrained(vision_model_name_or_path)
        if hasattr(vision_config, "vision_config"):  # a CLIP / SigLIP checkpoint: keep its vision tower
            vision_config = vision_config.vision_config
        vision_kwargs = without_tanh_pooler(vision_config) | vision_kwargs
        vision_model = AutoModel.from_pretrained(vision_model_name_or_path, config=vision_config, **vision_kwargs)
        text_config = AutoConfig.from_pretrained(text_model_name_or_path)
        text_kwargs = without_tanh_pooler(text_config) | text_kwargs
        text_model = AutoModel.from_pretrained(text_model_name_or_path, config=text_config, **text_kwargs)
        try:
            tokenizer_ids = special_token_ids(AutoTokenizer.from_pretrained(text_model_name_or_path))
        except (OSError, ValueError):  # no tokenizer files: the ids come from the text config or the caller
            tokenizer_ids = {}
        kwargs = {name: value for name, value in tokenizer_ids.items() if value is not None} | kwargs
        config = VTFusionConfig(vision_config=vision_model.config, text_config=text_model.config, **kwargs)
        return cls(config, vision_model=vision_model, text_model=text_model)


class VTFusionModel(VTFusionPreTrainedModel):
    """Encoders, alignment projections with a learned temperature, and the fusion module.

    `vision_model` / `text_model`: encoders already built (pretrained ones, from `from_vision_text_pretrained`), as
    `VisionTextDualEncoderModel` takes them; by default they are built from `config` with random weights.
    """

    def __init__(
        self,
        config: VTFusionConfig,
        vision_model: PreTrainedModel | None = None,
        text_model: PreTrainedModel | None = None,
    ):
        super().__init__(config)
        vision_config, text_config = config.vision_config, config.text_config
        if vision_model is None:
            vision_model = AutoModel.from_config(vision_config, **without_tanh_pooler(vision_config))
        if text_model is None:
            text_model = AutoModel.from_config(text_config, **without_tanh_pooler(text_config))
        self.vision_model, self.text_model = vision_model, text_model
        vision_width, text_width = encoder_hidden_size(config.vision_config), encoder_hidden_size(config.text_config)
        self.visual_projection = nn.Linear(vision_width, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(text_width, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.image_to_fusion = nn.Linear(vision_width, config.fusion_hidden_size)
        self.text_to_fusion = nn.Linear(text_width, config.fusion_hidden_size)
        self.fusion = build_fusion(config)
        # DistilBERT-like encoders take no token_type_ids (transformers #18480): pass only what `forward` accepts.
        self._text_forward_args = set(inspect.signature(self.text_model.forward).parameters)
        self.post_init()

    # -- towers --------------------------------------------------------------------------------------------------

    def encode_image(self, pixel_values: torch.Tensor, output_hidden_states=False, output_attentions=False):
        """pixels [B, 3, H, W] -> (tokens [B, Ni, vision_width], pooled [B, vision_width], encoder outputs)."""
        check_pixel_values(pixel_values)
        flags = {"output_hidden_states": output_hidden_states} | (
            {"output_attentions": True} if output_attentions else {}
        )
        outputs = self.vision_model(pixel_values=pixel_values, **flags)  # CNNs take no `output_attentions`
        tokens = outputs.last_hidden_state
        if tokens.ndim == 4:  # CNN feature map [B, C, h, w] -> [B, h*w, C], normalised and placed as ViT tokens are
            tokens = cnn_tokens(tokens)
        pooled = getattr(outputs, "pooler_output", None)
        pooled = tokens[:, 0] if pooled is None else pooled.flatten(1)  # [CLS] of ViT-like encoders
        return tokens, pooled, outputs

    def encode_text(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, **kwargs):
        """ids [B, T] -> (tokens [B, T, text_width], mean of the real tokens [B, text_width], encoder outputs).

        Mean pooling, as sentence-transformers pool MiniLM: it works for any text encoder, pretrained or not.
        """
        check_input_ids(input_ids, attention_mask, self.config.text_config)
        extra = {"token_type_ids": token_type_ids, "position_ids": position_ids}
        extra = {k: v for k, v in extra.items() if v is not None and k in self._text_forward_args}
        flags = {k: v for k, v in kwargs.items() if v}  # output_hidden_states / output_attentions, when asked
        outputs = self.text_model(input_ids=input_ids, attention_mask=attention_mask, **extra, **flags)
        tokens = outputs.last_hidden_state
        return tokens, masked_mean(tokens, attention_mask), outputs

    @can_return_tuple
    def get_image_features(
        self, pixel_values: torch.Tensor, output_attentions=None, output_hidden_states=None, **kwargs
    ) -> BaseModelOutputWithPooling:
        """As CLIP in transformers 5: `pooler_output` holds the projected (unnormalised) image features."""
        check_kwargs(kwargs)
        tokens, pooled, outputs = self.encode_image(pixel_values, bool(output_hidden_states), bool(output_attentions))
        return BaseModelOutputWithPooling(
            last_hidden_state=tokens,
            pooler_output=self.visual_projection(pooled),
            hidden_states=outputs.hidden_states,
            attentions=getattr(outputs, "attentions", None),
        )

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """As CLIP in transformers 5: `pooler_output` holds the projected (unnormalised) text features."""
        check_kwargs(kwargs)
        flags = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
        tokens, pooled, outputs = self.encode_text(input_ids, attention_mask, token_type_ids, **flags)
        return BaseModelOutputWithPooling(
            last_hidden_state=tokens,
            pooler_output=self.text_projection(pooled),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def parameters_outside(self, outputs: str) -> list[nn.Parameter]:
        """Parameters that no output of a head reading only the fused pair (`"pooled"`: classification, ITM) or only
        the fused tokens (`"tokens"`: the generation decoder) depends on: the contrastive side (projections,
        temperature) and, for tokens, the fusion's pooling-only parts. Such heads keep them, so that their checkpoints
        still serve zero-shot classification through the base model, but freeze them: they would get no gradient,
        which DDP with gradient checkpointing refuses."""
        idle = [*self.visual_projection.parameters(), *self.text_projection.parameters(), self.logit_scale]
        if outputs == "tokens":
            for name in FUSION_STRATEGIES[self.config.fusion_type].pooling_only:
                part = getattr(self.fusion, name)
                idle += [part] if isinstance(part, nn.Parameter) else list(part.parameters())
        return idle

    def similarity(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarity [num_texts, num_images] of normalised embeddings."""
        return self.logit_scale.exp().clamp(max=100) * text_embeds @ image_embeds.t()

    # -- fusion --------------------------------------------------------------------------------------------------

    def fuse(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        image_index: torch.Tensor | None = None,
    ) -> FusionOutput:
        """Encoder tokens of B pairs -> fused output. Takes encoder widths; maps both to the fusion width first.

        `image_index` ([B] long, optional): pair b is text b with image `image_index[b]` of `image_tokens`
        [num_images, Ni, W]. Pairs sharing an image (ITM negatives, re-ranking candidates) then share its image-side
        work: its mapping to the fusion width and, with cross-attention fusion, its keys/values in every layer.
        """
        image = self.image_to_fusion(image_tokens)
        text = self.text_to_fusion(text_tokens)
        if text_mask is None:
            text_mask = text.new_ones(text.shape[:2], dtype=torch.long)
        image_mask = None
        dropping = self.training and self.config.modality_dropout > 0
        if image_index is not None and (dropping or not FUSION_STRATEGIES[self.config.fusion_type].shares_image_keys):
            image, image_index = image[image_index], None
        if dropping:
            image, image_mask, text, text_mask = self._drop_modality(image, text, text_mask)
        if image_index is not None:
            return self.fusion(
                image, image_mask, text, text_mask, output_attentions, output_hidden_states, image_index
            )
        return self.fusion(image, image_mask, text, text_mask, output_attentions, output_hidden_states)

    def _drop_modality(self, image, text, text_mask):
        """With probability `modality_dropout` per pair, blank the image or the text (all but its first token)."""
        batch = image.shape[0]
        dropped = torch.rand(batch, device=image.device) < self.config.modality_dropout
        drop_image = dropped & (torch.rand(batch, device=image.device) < 0.5)
        drop_text = dropped & ~drop_image
        image = image * (~drop_image).to(image.dtype)[:, None, None]
        image_mask = (~drop_image).long()[:, None].expand(image.shape[:2]).clone()
        image_mask[:, 0] = 1  # keep one (blank) key so attention stays defined
        keep_text = torch.ones_like(text_mask)
        keep_text[drop_text, 1:] = 0
        return image, image_mask, text * keep_text[..., None].to(text.dtype), text_mask * keep_text

    # -- forward -------------------------------------------------------------------------------------------------

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        skip_fusion: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VTFusionOutput:
        r"""
        Image-only or text-only calls return that modality's embeddings. With both, the ITC logits are computed for
        every image against every text; the fusion module runs on paired inputs (as many images as texts) unless
        `skip_fusion=True`, or `return_loss=True` without `skip_fusion=False` (contrastive training pays nothing for
        fusion). Different numbers of images and texts (zero-shot classification: 1 image, N labels) skip fusion.
        """
        check_kwargs(kwargs)
        if input_ids is None and pixel_values is None:
            raise ValueError("VTFusionModel needs pixel_values, input_ids or both; got neither.")
        output_hidden_states = bool(output_hidden_states)
        out = {}  # fields of VTFusionOutput, which orders them by declaration (image_embeds first when alone)
        if pixel_values is not None:
            image_tokens, image_pooled, out["vision_model_output"] = self.encode_image(
                pixel_values, output_hidden_states
            )
            out["image_embeds"] = F.normalize(self.visual_projection(image_pooled), dim=-1)
        if input_ids is not None:
            text_tokens, text_pooled, out["text_model_output"] = self.encode_text(
                input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states=output_hidden_states
            )
            out["text_embeds"] = F.normalize(self.text_projection(text_pooled), dim=-1)
        if pixel_values is None or input_ids is None:
            return VTFusionOutput(**out)

        logits_per_text = self.similarity(out["image_embeds"], out["text_embeds"])
        out.update(logits_per_text=logits_per_text, logits_per_image=logits_per_text.t())
        if return_loss:
            if pixel_values.shape[0] != input_ids.shape[0]:
                raise ValueError(
                    f"return_loss=True needs paired inputs, got {pixel_values.shape[0]} images and "
                    f"{input_ids.shape[0]} texts."
                )
            out["loss"] = contrastive_loss(logits_per_text, self.config.label_smoothing)
        if skip_fusion is None:
            skip_fusion = bool(return_loss)
        if not skip_fusion and pixel_values.shape[0] == input_ids.shape[0]:
            fused = self.fuse(image_tokens, text_tokens, attention_mask, bool(output_attentions), output_hidden_states)
            out.update(
                fused_last_hidden_state=fused.last_hidden_state,
                fused_attention_mask=fused.attention_mask,
                fused_pooler_output=fused.pooler_output,
                cross_attentions=fused.cross_attentions,
                fusion_hidden_states=fused.hidden_states,
            )
        return VTFusionOutput(**out)


# ----------------------------------------------------------------------------------------------------------------
# Image-text matching (shared by retrieval and pre-training)
# ----------------------------------------------------------------------------------------------------------------


class ImageTextMatchingMixin:
    """ITC + ITM with hard negatives, for heads that hold `self.vtfusion` and `self.itm_head`."""

    def _itc_and_itm(
        self,
        image_tokens,
        image_pooled,
        text_tokens,
        text_pooled,
        input_ids,
        attention_mask,
        with_itm=None,
        image_present=None,
    ):
        """Losses for B paired inputs; under several processes, over the global batch gathered with gradients.

        Returns (itc_loss, itm_loss, logits_per_text [B, B_global], itm_logits of the B positive pairs [B, 2]); with
        `with_itm=False` (default: whether `itm_loss_weight` is non-zero) ITM is skipped: itm_loss 0, itm_logits None,
        a third of a pre-training step saved. `image_present` ([B] bool, optional): False for texts without an image,
        which are negatives only (`contrastive_loss`; in ITM their pairs are ignored, their blank image never drawn).
        """
        model = self.vtfusion
        image_embeds = F.normalize(model.visual_projection(image_pooled), dim=-1)
        text_embeds = F.normalize(model.text_projection(text_pooled), dim=-1)
        all_image_embeds, all_text_embeds = gather_with_grad(image_embeds), gather_with_grad(text_embeds)
        all_logits_per_text = model.similarity(all_image_embeds, all_text_embeds)  # [B_global, B_global]
        all_present = None if image_present is None else gather_with_grad(image_present.long()).bool()
        itc_loss = contrastive_loss(all_logits_per_text, self.config.label_smoothing, all_present)
        batch, start = image_tokens.shape[0], dist.get_rank() * image_tokens.shape[0] if world_size() > 1 else 0
        rows = torch.arange(start, start + batch, device=image_tokens.device)
        if not (bool(self.config.itm_loss_weight) if with_itm is None else with_itm):  # no fusion, no negatives
            return itc_loss, torch.zeros_like(itc_loss), all_logits_per_text[rows], None

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text_tokens, attention_mask, input_ids = pad_to_global_length(text_tokens, attention_mask, input_ids)
        all_image_tokens, all_text_tokens = gather_with_grad(image_tokens), gather_with_grad(text_tokens)
        all_text_mask, all_ids = gather_with_grad(attention_mask), gather_with_grad(input_ids)

        with torch.no_grad():  # never draw the positive, nor a text identical to it, nor a blank image, as a negative
            same_text = ((all_ids[:, None, :] == all_ids[None, :, :]) | (all_text_mask[None, :, :] == 0)).all(-1)
            same_text |= torch.eye(len(all_ids), dtype=torch.bool, device=same_text.device)
            no_image = same_text if all_present is None else same_text | ~all_present[None, :]
            negative_text_of_image = sample_hard_negatives(all_logits_per_text.t(), same_text, self.training)
            negative_image_of_text = sample_hard_negatives(all_logits_per_text, no_image, self.training)
        neg_texts, neg_images = negative_text_of_image[rows], negative_image_of_text[rows]

        # one fusion call over [positives; image + negative text; negative image + text], each image fused once: on one
        # process the batch's images are exactly the ones paired (no `unique`, whose data-dependent size breaks
        # `torch.compile` graphs); across processes only the distinct ones of the global batch
        image_index = torch.cat([rows, rows, neg_images])
        images = rows
        if world_size() > 1:
            images, image_index = torch.unique(image_index, return_inverse=True)
        pair_texts = torch.cat([text_tokens, all_text_tokens[neg_texts], text_tokens])
        pair_masks = torch.cat([attention_mask, all_text_mask[neg_texts], attention_mask])
        fused = model.fuse(all_image_tokens[images], pair_texts, pair_masks, image_index=image_index)
        itm_logits = self.itm_head(fused.pooler_output)
        itm_labels = torch.cat([itm_logits.new_ones(batch), itm_logits.new_zeros(2 * batch)]).long()
        # a pair whose text is repeated by every other pair (a batch of one, say) has no negative: ignore its draws;
        # a text without image has no positive pair, and its blank image no negative text
        no_negative = torch.cat([same_text[rows].all(-1), no_image[rows].all(-1)])
        itm_labels[batch:] = itm_labels[batch:].masked_fill(no_negative, -100)
        if image_present is not None:
            itm_labels[: 2 * batch] = itm_labels[: 2 * batch].masked_fill(~image_present.repeat(2), -100)
        itm_loss = mean_cross_entropy(gather_with_grad(itm_logits), gather_with_grad(itm_labels))
        return itc_loss, itm_loss, all_logits_per_text[rows], itm_logits[:batch]


# ----------------------------------------------------------------------------------------------------------------
# Heads
# ----------------------------------------------------------------------------------------------------------------


class VTFusionForImageTextRetrieval(ImageTextMatchingMixin, VTFusionPreTrainedModel):
    """ITC (symmetric InfoNCE, learned temperature) + ITM on the fused pair with hard negatives; two-stage `rank`."""

    accepts_loss_kwargs = False

    def __init__(self, config: VTFusionConfig, vision_model=None, text_model=None):
        super().__init__(config)
        self.vtfusion = VTFusionModel(config, vision_model, text_model)
        self.itm_head = nn.Linear(config.fusion_hidden_size, 2)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.FloatTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        return_loss: bool = True,
        output_attentions: bool | None = None,
        image_present: torch.BoolTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VTFusionRetrievalOutput:
        r"""
        B paired images and texts. With `return_loss` (default: on, so `Trainer` evaluates the loss without labels),
        returns ITC + ITM losses, with one hard negative
        text per image and one hard negative image per text drawn from the ITC similarities. `itm_logits` score the
        given pairs. image_present (`[B]` bool, optional): False for a text without an image (any stand-in pixels),
        which then serves as a negative only.
        """
        check_kwargs(kwargs)
        check_paired(pixel_values, input_ids)
        model = self.vtfusion
        image_tokens, image_pooled, _ = model.encode_image(pixel_values)
        text_tokens, text_pooled, _ = model.encode_text(input_ids, attention_mask, token_type_ids)
        if return_loss:
            itc_loss, itm_loss, logits_per_text, itm_logits = self._itc_and_itm(
                image_tokens, image_pooled, text_tokens, text_pooled, input_ids, attention_mask, None, image_present
            )
            loss = self.config.itc_loss_weight * itc_loss + self.config.itm_loss_weight * itm_loss
            return VTFusionRetrievalOutput(
                loss=loss,
                itc_loss=itc_loss,
                itm_loss=itm_loss,
                itm_logits=itm_logits,
                logits_per_text=logits_per_text,
                logits_per_image=logits_per_text.t(),
            )
        image_embeds = F.normalize(model.visual_projection(image_pooled), dim=-1)
        text_embeds = F.normalize(model.text_projection(text_pooled), dim=-1)
        logits_per_text = model.similarity(image_embeds, text_embeds)
        fused = model.fuse(image_tokens, text_tokens, attention_mask, output_attentions=bool(output_attentions))
        return VTFusionRetrievalOutput(
            itm_logits=self.itm_head(fused.pooler_output),
            logits_per_text=logits_per_text,
            logits_per_image=logits_per_text.t(),
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            cross_attentions=fused.cross_attentions,
        )

    # -- two-stage retrieval -------------------------------------------------------------------------------------

    @torch.inference_mode()
    def retrieval_features(
        self, pixel_values=None, input_ids=None, attention_mask=None, token_type_ids=None, batch_size: int = 256
    ) -> VTFusionRetrievalFeatures:
        """Encode a gallery or a set of queries once, `batch_size` at a time: images (`pixel_values`) or texts."""
        if (pixel_values is None) == (input_ids is None):
            raise ValueError("retrieval_features encodes one modality: pass pixel_values or input_ids, not both.")
        model = self.vtfusion

        def rows(tensor, start):
            return None if tensor is None else tensor[start : start + batch_size]

        if pixel_values is not None:
            starts, projection = range(0, len(pixel_values), batch_size), model.visual_projection
            parts = [model.encode_image(rows(pixel_values, i))[:2] for i in starts]
        else:
            attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            starts, projection = range(0, len(input_ids), batch_size), model.text_projection
            parts = [
                model.encode_text(rows(input_ids, i), rows(attention_mask, i), rows(token_type_ids, i))[:2]
                for i in starts
            ]
        tokens, pooled = (torch.cat(part) for part in zip(*parts))  # [N, L, W], [N, W]
        return VTFusionRetrievalFeatures(
            embeds=F.normalize(projection(pooled), dim=-1), tokens=tokens, attention_mask=attention_mask
        )

    @torch.inference_mode()
    def rank(
        self,
        queries: VTFusionRetrievalFeatures,
        gallery: VTFusionRetrievalFeatures,
        top_k: int = 16,
        batch_size: int = 64,
    ) -> VTFusionRankingOutput:
        """Two-stage retrieval (ALBEF / BLIP): each query's top-k gallery items by ITC, re-ranked by ITM.

        `queries` and `gallery` come from `retrieval_features`: texts and images (text-to-image retrieval) or images
        and texts (image-to-text). Per chunk of `batch_size` queries, the first stage is one matrix product with the
        gallery embeddings; the second fuses the chunk's `batch_size * top_k` candidate pairs in one call, reading
        the gallery's precomputed tokens. Call `model.eval()` first, as for any evaluation.

        ```python
        gallery = model.retrieval_features(pixel_values=images)
        queries = model.retrieval_features(input_ids=ids, attention_mask=mask)
        ranking = model.rank(queries, gallery, top_k=16)  # ranking.indices[q, 0]: the best image for text q
        ```
        """
        if (queries.attention_mask is None) == (gallery.attention_mask is None):
            raise ValueError("rank needs text queries with an image gallery, or image queries with a text gallery.")
        top_k = min(top_k, len(gallery.embeds))
        chunks = []
        for start in range(0, len(queries.embeds), batch_size):
            chunk = VTFusionRetrievalFeatures(
                **{name: value[start : start + batch_size] for name, value in queries.items()}
            )
            similarity = self.vtfusion.similarity(gallery.embeds, chunk.embeds)  # [q, gallery], symmetric
            itc_scores, itc_indices = similarity.topk(top_k, dim=-1)  # [q, k]
            chunks.append(self.rank_candidates(chunk, gallery, itc_indices, itc_scores).to_tuple())
        indices, scores, itc_indices, itc_scores = (torch.cat(chunk) for chunk in zip(*chunks))
        return VTFusionRankingOutput(indices=indices, scores=scores, itc_indices=itc_indices, itc_scores=itc_scores)

    @torch.inference_mode()
    def rank_candidates(self, queries, gallery, candidates: torch.Tensor, candidate_scores: torch.Tensor):
        """The second stage alone: each query's `candidates` [q, k] (indices into `gallery`, found by ITC here or by
        an approximate index, `retrieval_index.GalleryIndex`) sorted by ITM; `candidate_scores` are kept as the
        first stage's."""
        scores, order = self._match_scores(queries, gallery, candidates).sort(dim=-1, descending=True)
        return VTFusionRankingOutput(
            indices=candidates.gather(-1, order), scores=scores, itc_indices=candidates, itc_scores=candidate_scores
        )

    def _match_scores(self, queries, gallery, candidates: torch.Tensor) -> torch.Tensor:
        """ITM log-probability of a match for each query with each of its candidates [q, k] -> [q, k]."""
        num_queries, k = candidates.shape
        flat = candidates.flatten()  # [q * k]
        if queries.attention_mask is not None:  # text queries, image candidates: each distinct image fused once
            images, image_index = torch.unique(flat, return_inverse=True)
            image_tokens = gallery.tokens[images]  # [distinct images, Ni, W]
            text_tokens = queries.tokens.repeat_interleave(k, dim=0)  # [q * k, Nt, W]
            text_mask = queries.attention_mask.repeat_interleave(k, dim=0)
        else:  # image queries, text candidates: each query image fused once for all its k candidates
            image_tokens = queries.tokens  # [q, Ni, W]
            image_index = torch.arange(num_queries, device=flat.device).repeat_interleave(k)
            text_tokens, text_mask = gallery.tokens[flat], gallery.attention_mask[flat]
        pooled = self.vtfusion.fuse(image_tokens, text_tokens, text_mask, image_index=image_index).pooler_output
        return self.itm_head(pooled).log_softmax(-1)[:, 1].view(num_queries, k)


class VTFusionForSequenceClassification(VTFusionPreTrainedModel):
    """Image + text -> label(s) from the fused pooled vector; `problem_type` behaves as in transformers' text heads."""

    accepts_loss_kwargs = False
    _reads_fused = "pooled"

    def __init__(self, config: VTFusionConfig, vision_model=None, text_model=None):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vtfusion = VTFusionModel(config, vision_model, text_model)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.fusion_hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.FloatTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutput:
        r"""
        labels (`[B]` int for single-label, `[B, num_labels]` float for multi-label or regression): as in
        `BertForSequenceClassification`.
        """
        check_kwargs(kwargs)
        check_paired(pixel_values, input_ids)
        model = self.vtfusion
        image_tokens, _, _ = model.encode_image(pixel_values)
        text_tokens, _, _ = model.encode_text(input_ids, attention_mask, token_type_ids)
        fused = model.fuse(
            image_tokens, text_tokens, attention_mask, bool(output_attentions), bool(output_hidden_states)
        )
        logits = self.classifier(self.dropout(fused.pooler_output))
        loss = classification_loss(logits, labels, self.config) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=fused.hidden_states, attentions=fused.cross_attentions
        )


class VTFusionTextDecoder(PreTrainedModel):
    """Causal text decoder whose every layer cross-attends to a memory (image tokens or fused image-text tokens).

    A `PreTrainedModel` of its own, as `BartDecoder` is, so that the library records what it returns on request
    (`output_hidden_states`: the input of every layer and the final states; `output_attentions`: every layer's self-
    and memory attention maps) with hooks, instead of the forward collecting them."""

    config_class = VTFusionConfig
    _supports_sdpa = True
    _supports_attention_backend = True
    _can_record_outputs = {
        "hidden_states": VTFusionLayer,
        "attentions": OutputRecorder(VTFusionAttention, index=1, layer_name="self_attn"),
        "cross_attentions": OutputRecorder(VTFusionAttention, index=1, layer_name="cross_attn"),
    }

    def __init__(self, config: VTFusionConfig):
        super().__init__(config)
        size = config.decoder_hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, size, padding_idx=config.pad_token_id)
        self.embed_positions = nn.Embedding(config.max_decoder_position_embeddings, size)
        self.layers = nn.ModuleList(
            [
                VTFusionLayer(
                    config,
                    size,
                    config.decoder_num_attention_heads,
                    config.decoder_intermediate_size,
                    cross_size=config.fusion_hidden_size,
                    is_causal=True,
                    idx=i,
                    linear=PackedLinear,
                )
                for i in range(config.decoder_num_hidden_layers)
            ]
        )
        self.norm = nn.LayerNorm(size, eps=config.layer_norm_eps)
        self.post_init()

    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        output_attentions: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        """ids [B, T] (the tokens after the cached ones) -> hidden states [B, T, H]. `output_attentions` also picks
        the attention that returns its weights; `output_hidden_states` is read by the recording alone."""
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        length = past + input_ids.shape[1]
        if length > self.embed_positions.num_embeddings:
            raise ValueError(
                f"The decoder sequence has {length} tokens but max_decoder_position_embeddings is "
                f"{self.embed_positions.num_embeddings}; shorten the labels or lower max_new_tokens."
            )
        positions = torch.arange(past, length, device=input_ids.device)
        hidden = self.embed_tokens(input_ids) + self.embed_positions(positions)
        self_cache = past_key_values
        if isinstance(self_cache, EncoderDecoderCache):
            self_cache = self_cache.self_attention_cache
        # causal, offset by the cached tokens, hiding padding; None where the kernel's `is_causal` does it. Positional:
        # transformers 5.24 renamed the cache argument.
        self_mask = create_causal_mask(self.config, hidden, attention_mask, self_cache)
        memory_keys = additive_mask(memory_mask, hidden.dtype)
        for layer in self.layers:
            hidden, _, _ = layer(hidden, self_mask, memory, memory_keys, past_key_values, output_attentions)
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=self.norm(hidden))


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, config) -> torch.Tensor:
    """`ForSequenceClassificationLoss` (the problem type as transformers' text heads infer it), with each class of a
    single-label problem weighted by `config.class_weights` when set (imbalanced classes)."""
    if config.class_weights is None or labels.is_floating_point():
        return ForSequenceClassificationLoss(labels, logits, config)
    weight = torch.tensor(config.class_weights, dtype=logits.dtype, device=logits.device)
    return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1), weight=weight)


def caption_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Next-token cross-entropy of decoder logits [B, T, V] against labels [B, T] already aligned with them (the
    decoder read them shifted right), -100 ignored: `ForCausalLMLoss`, which divides by `num_items_in_batch` when
    `Trainer` passes it, so gradient accumulation averages over tokens rather than over batches."""
    return ForCausalLMLoss(logits, None, logits.shape[-1], num_items_in_batch, shift_labels=labels.contiguous())


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Decoder inputs from labels: start token, then labels[:-1]; ignored (-100) positions become padding."""
    if decoder_start_token_id is None or pad_token_id is None:
        raise ValueError(
            "The decoder needs config.decoder_start_token_id (or bos_token_id) and pad_token_id: set them from the "
            "tokenizer, e.g. VTFusionConfig(..., **special_token_ids(tokenizer))."
        )
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


class VTFusionForConditionalGeneration(VTFusionPreTrainedModel, GenerationMixin):
    """Captioning and VQA: a causal decoder over the image tokens (no text) or the fused image-question tokens.

    `input_ids` is the text fused with the image (a question); the answer or caption is the decoder's sequence
    (`labels` / `decoder_input_ids`). `generate()` encodes the image (and question) once per call; the memory's
    cross-attention keys/values are computed at the first step and then read from the `EncoderDecoderCache`.
    """

    @torch.no_grad()
    def generate(self, pixel_values=None, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        """`GenerationMixin.generate` (greedy, beam search, sampling, assisted, ...) with the memory encoded up front.

        `input_ids` is the question fused with the image, never a decoder prefix (pass `decoder_input_ids` for that):
        the library would take `input_ids` left in its keyword arguments for the decoder's prompt, hence this
        override. `pixel_values` still reach `generate()` as its main input, so an `assistant_model` encodes the image
        with its own `get_encoder()`; it drafts without the question, and the answer is unchanged (every drafted
        token is verified by this model).
        """
        if kwargs.get("encoder_outputs") is None:
            flags = [bool(kwargs.get(name)) for name in ("output_attentions", "output_hidden_states")]
            kwargs["encoder_outputs"] = self.encode(pixel_values, input_ids, attention_mask, token_type_ids, *flags)
        return super().generate(pixel_values, **kwargs)

    def _get_logits_processor(self, *args, **kwargs):
        """The library's logits processors, its minimum-length ones replaced in place by ones that give the same scores
        for a few columns' work (`logits_process.py`). A private hook of `GenerationMixin` (4.x and 5.x); were it
        renamed, generation would run the library's own processors, with the same outputs."""
        return with_eos_blocked_cheaply(super()._get_logits_processor(*args, **kwargs), self.config.vocab_size)

    def get_encoder(self, modality: str | None = None) -> "VTFusionMemoryEncoder":
        """What `generate()` utilities call to encode the decoder's memory (assisted decoding's assistant does)."""
        return VTFusionMemoryEncoder(self)

    _tied_weights_keys = {"lm_head.weight": "text_decoder.embed_tokens.weight"}
    main_input_name = "pixel_values"  # what `generate()` encodes
    _reads_fused = "tokens"

    def __init__(self, config: VTFusionConfig, vision_model=None, text_model=None):
        # An encoder-decoder for `generate()`: the image (+ question) side is encoded once per call. On a copy, so
        # that the caller's config (which may build other heads) is left as it was.
        config = copy.deepcopy(config)
        config.is_encoder_decoder = True
        super().__init__(config)
        self.vtfusion = VTFusionModel(config, vision_model, text_model)
        self.text_decoder = VTFusionTextDecoder(config)
        self.lm_head = PackedLinear(config.decoder_hidden_size, config.vocab_size, bias=False)
        self.post_init()
        # Generate up to the decoder's position limit by default; pipelines then add no longer default of their own.
        self.generation_config.max_length = config.max_decoder_position_embeddings

    def encode(
        self,
        pixel_values,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> VTFusionEncoderOutput:
        """Decoder memory: image tokens for captioning, fused image-question tokens for VQA.

        A row without a question (no `input_ids`, or an empty text, which tokenises to special tokens only: what the
        image-text-to-text pipeline sends to caption) is captioned; a batch may mix captioning and questions.
        """
        if pixel_values is None:
            raise ValueError("VTFusionForConditionalGeneration needs pixel_values (the image to describe).")
        model = self.vtfusion
        image_tokens, _, vision = model.encode_image(pixel_values, output_hidden_states, output_attentions)
        image_memory = model.image_to_fusion(image_tokens)  # [B, Ni, H]
        recorded = {"hidden_states": vision.hidden_states, "attentions": getattr(vision, "attentions", None)}
        asks = None if input_ids is None else has_words(input_ids, attention_mask, self.config)  # [B]
        # Reading `asks` on the host picks the smaller memory for a batch of one kind; under `torch.compile` (no graph
        # break) a batch with texts always takes the mixed memory at the end, which decodes every row the same.
        compiling = torch.compiler.is_compiling()
        if asks is None or (not compiling and not asks.any()):
            return VTFusionEncoderOutput(last_hidden_state=image_memory, **recorded)
        check_paired(pixel_values, input_ids)
        text_tokens, _, _ = model.encode_text(input_ids, attention_mask, token_type_ids)
        fused = model.fuse(image_tokens, text_tokens, attention_mask, output_attentions, output_hidden_states)
        recorded = {
            "hidden_states": joined(recorded["hidden_states"], fused.hidden_states),
            "attentions": joined(recorded["attentions"], fused.cross_attentions),
        }
        if not compiling and asks.all():
            return VTFusionEncoderOutput(
                last_hidden_state=fused.last_hidden_state, attention_mask=fused.attention_mask, **recorded
            )
        # Mixed batch: each row reads only its own kind of memory; the other part is masked out. Masked keys weigh
        # exactly zero and memory attention has no positions, so every row decodes as it would alone.
        image_mask = (~asks)[:, None].expand(image_memory.shape[:2]).long()
        fused_mask = fused.attention_mask * asks[:, None].long()
        return VTFusionEncoderOutput(
            last_hidden_state=torch.cat([image_memory, fused.last_hidden_state], dim=1),
            attention_mask=torch.cat([image_mask, fused_mask], dim=1),
            **recorded,
        )

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        encoder_outputs: VTFusionEncoderOutput | None = None,
        cache: Cache | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> Seq2SeqLMOutput:
        r"""
        labels (`[B, T]`): target tokens ending with `eos_token_id`, -100 where ignored; the decoder reads them
        shifted right behind `decoder_start_token_id`.
        cache / past_key_values (`EncoderDecoderCache`): decoder self-attention and memory cross-attention keys/values;
        `cache` is the name from transformers 5.24 on, `past_key_values` before (both accepted, either returned under
        the installed release's name). `use_cache` defaults to `config.use_cache`, and is off when `labels` are given.
        logits_to_keep (`int` or `[T']` indices): logits of the last `logits_to_keep` positions only (0: all);
        `generate()` passes 1.
        """
        past_key_values = cache if cache is not None else past_key_values
        check_kwargs(kwargs)
        output_attentions, output_hidden_states = bool(output_attentions), bool(output_hidden_states)
        if encoder_outputs is None:
            encoder_outputs = self.encode(
                pixel_values, input_ids, attention_mask, token_type_ids, output_attentions, output_hidden_states
            )
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("Pass labels (training) or decoder_input_ids; to produce text, call generate().")
            decoder_input_ids = shift_tokens_right(
                labels, self.config.pad_token_id, self.config.decoder_start_token_id
            )
        use_cache = (self.config.use_cache if use_cache is None else use_cache) and labels is None
        if use_cache and past_key_values is None:
            past_key_values = EncoderDecoderCache(DynamicCache(), DynamicCache())
        decoded = self.text_decoder(
            decoder_input_ids,
            encoder_outputs.last_hidden_state,
            encoder_outputs.attention_mask,
            decoder_attention_mask,
            past_key_values if use_cache else None,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,  # whatever `config.return_dict` says: this head reads the fields
        )
        kept = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep  # 0: every position
        logits = self.lm_head(decoded.last_hidden_state[:, kept])
        loss = None
        if labels is not None:
            loss = caption_loss(logits, labels, kwargs.get("num_items_in_batch"))
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            decoder_hidden_states=decoded.hidden_states,
            decoder_attentions=decoded.attentions,
            cross_attentions=decoded.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
            **{CACHE_NAME: past_key_values if use_cache else None},
        )

    @staticmethod
    def _reorder_cache(past_key_values: Cache, beam_idx: torch.LongTensor) -> Cache:
        """Beam search: reorder the decoder's self-attention cache. Beams move only among the beams of one input, which
        all hold the same memory keys/values, so the cross-attention cache is left as it is instead of copied."""
        if isinstance(past_key_values, EncoderDecoderCache):
            past_key_values.self_attention_cache.reorder_cache(beam_idx)
        else:
            past_key_values.reorder_cache(beam_idx)
        return past_key_values


class VTFusionMemoryEncoder(nn.Module):
    """The encoder side of `VTFusionForConditionalGeneration` as a module of its own, for `get_encoder()`: `forward`
    is the head's `encode`. It holds the head without registering it, so it adds no parameters or state dict keys."""

    def __init__(self, head: VTFusionForConditionalGeneration):
        super().__init__()
        object.__setattr__(self, "head", head)  # not a submodule: the head owns the weights

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool = True,
    ) -> VTFusionEncoderOutput:
        flags = bool(output_attentions), bool(output_hidden_states)
        encoded = self.head.encode(pixel_values, input_ids, attention_mask, token_type_ids, *flags)
        return encoded if return_dict else encoded.to_tuple()


class MaskedLanguageModelingMixin:
    """Masked words of a caption predicted from the caption fused with its image (ALBEF's / ViLT's MLM), for heads
    that hold `self.vtfusion` and `self.mlm_head`. A masked colour, shape or position word can only be recovered by
    looking at the right place of the image, so this is the pre-training objective that grounds the fusion layers'
    words (ITM alone gives them one bit per pair; the caption decoder reads the image without them)."""

    def _mlm_loss(self, image_tokens, mlm_input_ids, attention_mask, mlm_labels) -> torch.Tensor:
        model = self.vtfusion
        text_tokens, _, _ = model.encode_text(mlm_input_ids, attention_mask)
        fused = model.fuse(image_tokens, text_tokens, attention_mask).last_hidden_state[:, : mlm_input_ids.shape[1]]
        masked = mlm_labels != -100  # [B, T]
        if torch.compiler.is_compiling():  # static shapes: every position through the head, the unmasked ignored
            logits, labels = self.mlm_head(fused), mlm_labels
        else:  # only the masked positions: a sixth of the vocabulary projections
            logits, labels = self.mlm_head(fused[masked]), mlm_labels[masked]
        # mean over the masked words; 0, with every weight still in the graph, when none is (very short texts)
        return ForMaskedLMLoss(logits, labels, self.config.vocab_size, num_items_in_batch=masked.sum().clamp(min=1))


class VTFusionForPreTraining(ImageTextMatchingMixin, MaskedLanguageModelingMixin, VTFusionPreTrainedModel):
    """ITC + ITM (hard negatives) + captioning LM in one forward, plus MLM through the fusion module when the batch
    carries masked captions (`mlm_input_ids`, `mlm_labels`); the image is encoded once and reused by all of them."""

    _tied_weights_keys = {"lm_head.weight": "text_decoder.embed_tokens.weight"}
    accepts_loss_kwargs = False

    def __init__(self, config: VTFusionConfig, vision_model=None, text_model=None):
        super().__init__(config)
        self.vtfusion = VTFusionModel(config, vision_model, text_model)
        self.itm_head = nn.Linear(config.fusion_hidden_size, 2)
        self.text_decoder = VTFusionTextDecoder(config)
        self.lm_head = PackedLinear(config.decoder_hidden_size, config.vocab_size, bias=False)
        # registered last, so the other modules draw the same initial weights as in a head without it
        self.mlm_head = nn.Linear(config.fusion_hidden_size, config.vocab_size)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.FloatTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        mlm_input_ids: torch.LongTensor | None = None,
        mlm_labels: torch.LongTensor | None = None,
        return_loss: bool = True,
        image_present: torch.BoolTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VTFusionPreTrainingOutput:
        r"""
        B paired images and captions. labels (`[B, T]`, optional): LM targets for the caption decoder; by default
        the caption itself (`input_ids` without its first [CLS] token, padding ignored). mlm_input_ids / mlm_labels
        (`[B, T]`, optional): the captions with some words masked and the masked words (-100 elsewhere), as
        `DataCollatorForLanguageModeling` makes them; they add the MLM loss. The losses are always computed;
        `return_loss=True` is declared so that `Trainer` evaluates them without a label column. image_present (`[B]`
        bool, optional): False for a caption without an image, whose pixels are a blank stand-in: it is a negative in
        ITC / ITM, and its LM and MLM losses read the blank image, a constant, so they train the text side alone.
        """
        check_kwargs(kwargs)
        check_paired(pixel_values, input_ids)
        model = self.vtfusion
        image_tokens, image_pooled, _ = model.encode_image(pixel_values)
        text_tokens, text_pooled, _ = model.encode_text(input_ids, attention_mask, token_type_ids)
        itc_loss, itm_loss, logits_per_text, itm_logits = self._itc_and_itm(
            image_tokens, image_pooled, text_tokens, text_pooled, input_ids, attention_mask, None, image_present
        )
        if labels is None:
            labels = caption_labels(input_ids, attention_mask)
        decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)
        memory = model.image_to_fusion(image_tokens)
        hidden = self.text_decoder(decoder_input_ids, memory, return_dict=True).last_hidden_state
        lm_logits = self.lm_head(hidden)
        lm_loss = caption_loss(lm_logits, labels)
        config = self.config
        loss = config.itc_loss_weight * itc_loss + config.itm_loss_weight * itm_loss + config.lm_loss_weight * lm_loss
        mlm_loss = None
        if mlm_labels is not None:
            mlm_loss = self._mlm_loss(image_tokens, mlm_input_ids, attention_mask, mlm_labels)
            loss = loss + config.mlm_loss_weight * mlm_loss
        return VTFusionPreTrainingOutput(
            loss=loss,
            itc_loss=itc_loss,
            itm_loss=itm_loss,
            lm_loss=lm_loss,
            mlm_loss=mlm_loss,
            logits_per_text=logits_per_text,
            logits_per_image=logits_per_text.t(),
            itm_logits=itm_logits,
            lm_logits=lm_logits,
        )


def has_words(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, config) -> torch.Tensor:
    """[B] bool: whether each text holds a real token besides padding, bos ([CLS]) and eos ([SEP])."""
    special_ids = [i for i in (config.pad_token_id, config.bos_token_id, config.eos_token_id) if i is not None]
    words = ~torch.isin(input_ids, torch.tensor(special_ids, device=input_ids.device))
    if attention_mask is not None:
        words &= attention_mask.bool()
    return words.any(dim=-1)


def joined(first: tuple | None, second: tuple | None) -> tuple | None:
    """Two optional tuples of recorded states, one after the other (None when neither was recorded)."""
    return None if first is None and second is None else (first or ()) + (second or ())


def caption_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """LM targets from tokenised captions "[CLS] w1 .. wn [SEP] [PAD]..": "w1 .. wn [SEP]", padding set to -100."""
    labels = input_ids[:, 1:].clone()
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask[:, 1:] == 0, -100)
    return labels


def cnn_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """CNN features [B, C, h, w] -> tokens [B, h*w, C]: layer-normalised, plus a 2D position code.

    A ViT's last state is layer-normalised; a ResNet's is a ReLU output whose mean (about 1 for every cell) dwarfs what
    tells the cells apart, so keys for attention over it start out alike. Normalising each token removes that shared
    part (measured from scratch: caption LM loss 0.74 vs 0.79 at step 100, the same step time).
    """
    channels, height, width = feature_map.shape[1:]
    tokens = F.layer_norm(feature_map.flatten(2).transpose(1, 2), (channels,))
    return tokens + sincos_position_grid(channels, height, width, tokens).flatten(1).t()


def sincos_position_grid(channels: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """2D sin-cos position encoding [C, h, w] (as in MAE / DETR): half the channels encode the row, half the column.

    Flattened CNN features carry no position, so attention over them could not tell left from right; this tells the
    fusion layers where each token is, for any feature-map size, with no parameters.
    """
    quarter = channels // 4
    frequencies = 1.0 / (10000 ** (torch.arange(quarter, device=like.device, dtype=like.dtype) / max(quarter, 1)))
    rows = torch.arange(height, device=like.device, dtype=like.dtype)[:, None] * frequencies  # [h, C/4]
    cols = torch.arange(width, device=like.device, dtype=like.dtype)[:, None] * frequencies  # [w, C/4]
    row_code = torch.cat([rows.sin(), rows.cos()], dim=-1)[:, None, :].expand(height, width, -1)
    col_code = torch.cat([cols.sin(), cols.cos()], dim=-1)[None, :, :].expand(height, width, -1)
    grid = torch.cat([row_code, col_code], dim=-1)  # [h, w, 4 * (C // 4)]
    grid = F.pad(grid, (0, channels - grid.shape[-1]))
    return grid.permute(2, 0, 1)


def check_pixel_values(pixel_values: torch.Tensor) -> None:
    if pixel_values.ndim != 4 or pixel_values.shape[0] == 0:
        raise ValueError(
            f"pixel_values must be a non-empty batch [batch, channels, height, width], got shape "
            f"{tuple(pixel_values.shape)}; prepare images with VTFusionProcessor(images=...)."
        )
    if not pixel_values.is_floating_point():
        raise ValueError(f"pixel_values must be floating point, got {pixel_values.dtype}; use VTFusionProcessor.")


def check_input_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, text_config) -> None:
    """Token ids the text encoder can embed; errors here instead of an index error deep inside torch."""
    if input_ids.ndim != 2 or input_ids.shape[0] == 0:
        raise ValueError(f"input_ids must be a non-empty batch [batch, length], got shape {tuple(input_ids.shape)}.")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} must match input_ids {tuple(input_ids.shape)}."
        )
    max_length = getattr(text_config, "max_position_embeddings", None)
    if max_length is not None and input_ids.shape[1] > max_length:
        raise ValueError(
            f"Texts of {input_ids.shape[1]} tokens exceed the text encoder's {max_length} positions; truncate them "
            "(VTFusionProcessor truncates to the tokenizer's model_max_length by default)."
        )
    if torch.compiler.is_compiling():  # the range check below reads the ids on the host
        return
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= text_config.vocab_size):
        raise ValueError(
            f"Token ids must lie in [0, {text_config.vocab_size}) (the text encoder's vocabulary), got "
            f"[{int(input_ids.min())}, {int(input_ids.max())}]: the tokenizer does not match this model."
        )


def check_kwargs(kwargs: dict) -> None:
    """A forward's `**kwargs` take the library's `TransformersKwargs` only: a misspelt argument fails by its name."""
    unknown = sorted(kwargs.keys() - TransformersKwargs.__annotations__.keys())
    if unknown:
        raise TypeError(f"Unexpected keyword argument(s) {unknown}: not an argument of this model's forward.")


def check_paired(pixel_values: torch.Tensor | None, input_ids: torch.Tensor | None) -> None:
    if pixel_values is None or input_ids is None:
        raise ValueError("This head scores image-text pairs: pass both pixel_values and input_ids.")
    if pixel_values.shape[0] != input_ids.shape[0]:
        raise ValueError(
            f"Got {pixel_values.shape[0]} images and {input_ids.shape[0]} texts; this head needs one text per image. "
            "To compare every image with every text, use VTFusionModel (logits_per_image)."
        )


__all__ = [
    "VTFusionPreTrainedModel",
    "VTFusionModel",
    "VTFusionForImageTextRetrieval",
    "VTFusionForSequenceClassification",
    "VTFusionForConditionalGeneration",
    "VTFusionForPreTraining",
    "contrastive_loss",
    "classification_loss",
]
