"""The five fusion strategies behind one interface, and the attention blocks they (and the decoder) are built from.

Every strategy takes image tokens [B, Ni, H] and text tokens [B, Nt, H] (already mapped to the fusion width H) with
their key-padding masks, and returns a `FusionOutput`: fused tokens (what a decoder or a token-level head reads),
their mask, one pooled vector per pair (what the ITM / classification heads read) and, on request, the
text-to-image attention maps [B, heads, Nt, Ni] of every layer.

What a strategy records is its own, not one module's output (co-attention's states join its two streams, concat's
maps are the text-to-image block of its joint attention), so each strategy collects it; the caption decoder, whose
recorded states are plain layer outputs, leaves that to the library's output recording (`_can_record_outputs`).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, is_causal=False, **_):
    """Reference attention that also returns the weights; used when attention maps are requested."""
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None and attention_mask.dtype == torch.bool:  # `masking_utils`' SDPA form: True = visible
        attention_mask = torch.zeros_like(attn_weights).masked_fill(~attention_mask, torch.finfo(query.dtype).min)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    if is_causal:  # queries are the last q positions of the k keys
        q_len, k_len = query.shape[2], key.shape[2]
        visible = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
        attn_weights = attn_weights.masked_fill(~visible, torch.finfo(attn_weights.dtype).min)
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


def linear_products(input: torch.Tensor, *layers: nn.Module) -> tuple[torch.Tensor, ...]:
    """`tuple(layer(input) for layer in layers)`, in one product where the first layer can stack the others with
    itself (`PackedLinear.stacked_products`, the decoder's). Asked of the layer rather than imported: this module is
    imported by the configuration, and transformers 4.x copies only the direct relative imports of a local folder's
    module, so an import here would fail before `compat` could name the version to install."""
    stacked_products = getattr(layers[0], "stacked_products", None)
    if stacked_products is None:
        return tuple(layer(input) for layer in layers)
    return stacked_products(input, *layers[1:])


def without_padding(mask: torch.Tensor | None) -> bool:
    """Whether a [B, N] 1/0 key mask hides nothing, so attention can take its unmasked kernel. The check reads the mask
    on the host, so under `torch.compile` it answers False and the mask is always built (no graph break)."""
    return mask is None or (not torch.compiler.is_compiling() and bool(mask.all()))


def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """[B, Nk] 1/0 key mask -> [B, 1, 1, Nk] additive mask (0 or a large negative), broadcast over heads and queries;
    None without padding (`without_padding`).

    A row whose keys are all masked attends uniformly instead of producing NaNs.
    """
    if without_padding(mask):
        return None
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the token axis of [B, N, H], counting only tokens whose mask is 1."""
    if mask is None:
        return tokens.mean(1)
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def masked_max(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-feature max over the token axis of [B, N, H], counting only tokens whose mask is 1."""
    if mask is None:
        return tokens.amax(1)
    hidden = ~mask.bool().unsqueeze(-1)
    return tokens.masked_fill(hidden, torch.finfo(tokens.dtype).min).amax(1)


# How the token-level fusions pool a pair's fused tokens into `pooler_output` (`config.fusion_pooling`).
POOLINGS = {"mean": masked_mean, "max": masked_max}


class VTFusionAttention(nn.Module):
    """Multi-head attention: self-attention, or cross-attention when `key_value_states` is given.

    Goes through `ALL_ATTENTION_FUNCTIONS` (SDPA by default), and through the eager path when weights are requested.
    With a cache, self-attention appends this step's keys/values, and cross-attention computes the keys/values of
    the (fixed) memory once and reuses them at every later step.
    """

    def __init__(
        self, config, hidden_size, num_heads, kv_size=None, is_causal=False, layer_idx=None, linear=nn.Linear
    ):
        super().__init__()
        self.config = config
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = is_causal
        self.layer_idx = layer_idx
        kv_size = kv_size or hidden_size
        self.q_proj = linear(hidden_size, hidden_size)
        self.k_proj = linear(kv_size, hidden_size)
        self.v_proj = linear(kv_size, hidden_size)
        self.out_proj = linear(hidden_size, hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        output_attentions: bool = False,
        key_value_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`key_value_index` ([B] long, cross-attention without cache): query row b attends to row
        `key_value_index[b]` of `key_value_states`, so a memory shared by several queries is projected once."""
        is_cross = key_value_states is not None
        cache = past_key_values
        if isinstance(cache, EncoderDecoderCache):
            cache = cache.cross_attention_cache if is_cross else cache.self_attention_cache
        reads_cache = is_cross and cache is not None and past_key_values.is_updated.get(self.layer_idx)
        if not is_cross:
            query, key, value = linear_products(hidden_states, self.q_proj, self.k_proj, self.v_proj)
        else:
            query = self.q_proj(hidden_states)
            if reads_cache:
                key, value = cache.layers[self.layer_idx].keys, cache.layers[self.layer_idx].values
            else:
                key, value = linear_products(key_value_states, self.k_proj, self.v_proj)
        query = self._split_heads(query)
        if not reads_cache:
            key, value = self._split_heads(key), self._split_heads(value)
            if key_value_index is not None:
                key, value = key[key_value_index], value[key_value_index]
            if cache is not None:
                key, value = cache.update(key, value, self.layer_idx)
                if is_cross:
                    past_key_values.is_updated[self.layer_idx] = True

        attention: Callable = eager_attention_forward
        if not output_attentions:
            attention = ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, eager_attention_forward
            )
        output, weights = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
            is_causal=self.is_causal and attention_mask is None and query.shape[2] > 1,
        )
        output = self.out_proj(output.reshape(*hidden_states.shape[:-1], -1))
        return output, weights

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        """[B, N, H] -> [B, heads, N, head_dim]"""
        return states.view(*states.shape[:-1], -1, self.head_dim).transpose(1, 2)


class VTFusionMLP(nn.Module):
    def __init__(self, config, hidden_size, intermediate_size, linear=nn.Linear):
        super().__init__()
        self.fc1 = linear(hidden_size, intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.act(self.fc1(hidden_states))))


class VTFusionLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: self-attention, optional cross-attention to a memory, MLP.

    Used by the fusion module (bidirectional self-attention) and by the decoder (causal, cached), whose `linear` is
    `PackedLinear` (few rows a step).
    """

    def __init__(
        self,
        config,
        hidden_size,
        num_heads,
        intermediate_size,
        cross_size=None,
        is_causal=False,
        idx=None,
        linear=nn.Linear,
    ):
        super().__init__()
        eps = config.layer_norm_eps
        self.self_attn_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.self_attn = VTFusionAttention(
            config, hidden_size, num_heads, is_causal=is_causal, layer_idx=idx, linear=linear
        )
        self.cross_attn = None
        if cross_size is not None:
            self.cross_attn_norm = nn.LayerNorm(hidden_size, eps=eps)
            self.cross_attn = VTFusionAttention(
                config, hidden_size, num_heads, kv_size=cross_size, layer_idx=idx, linear=linear
            )
        self.mlp_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.mlp = VTFusionMLP(config, hidden_size, intermediate_size, linear)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        output_attentions: bool = False,
        memory_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        attended, self_weights = self.self_attn(
            self.self_attn_norm(hidden_states),
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            output_attentions=output_attentions,
        )
        hidden_states = hidden_states + self.dropout(attended)
        cross_weights = None
        if self.cross_attn is not None:
            attended, cross_weights = self.cross_attn(
                self.cross_attn_norm(hidden_states),
                key_value_states=memory,
                attention_mask=memory_mask,
                past_key_values=past_key_values,
                output_attentions=output_attentions,
                key_value_index=memory_index,
            )
            hidden_states = hidden_states + self.dropout(attended)
        hidden_states = hidden_states + self.mlp(self.mlp_norm(hidden_states))
        return hidden_states, self_weights, cross_weights


@dataclass
class FusionOutput(ModelOutput):
    """
    last_hidden_state (`[B, N, H]`): fused tokens; text tokens first, then image tokens where both are kept.
    attention_mask (`[B, N]`): 1 for real tokens of `last_hidden_state`.
    pooler_output (`[B, H]`): one vector per image-text pair.
    cross_attentions (tuple of `[B, heads, Nt, Ni]`): text-to-image attention of each layer, on request.
    hidden_states (tuple of `[B, N, H]`): input and output of each layer, on request.
    """

    last_hidden_state: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


def concat_tokens(text_tokens, text_mask, image_tokens, image_mask):
    """Text then image tokens along the sequence axis, with the matching mask."""
    tokens = torch.cat([text_tokens, image_tokens], dim=1)
    if image_mask is None:
        image_mask = text_mask.new_ones(image_tokens.shape[:2])
    return tokens, torch.cat([text_mask, image_mask], dim=1)


class TransformerFusion(nn.Module):
    """Shared stack of `VTFusionLayer`s with a final norm.

    Pairs are pooled over all their real fused tokens (`config.fusion_pooling`), not as a tanh-pooled [CLS]: from
    scratch, a random text encoder's [CLS] barely varies across inputs and matching (ITM) stalls; on 8 random pairs
    the ITM loss stayed at 0.6 after 200 steps with a [CLS] pooler and fell to 0.12-0.26 with the mean. The max
    suits "does the text match the image?" best: one mismatched word decides it, and a mean dilutes that word among
    all the others (main job's pre-training, 200 steps at batch 64: ITM loss 0.35 with the max, 0.63 with the mean,
    where the prior is 0.637).
    """

    def __init__(self, config, cross: bool):
        super().__init__()
        size, heads, inner = (
            config.fusion_hidden_size,
            config.fusion_num_attention_heads,
            config.fusion_intermediate_size,
        )
        cross_size = size if cross else None
        self.layers = nn.ModuleList(
            [VTFusionLayer(config, size, heads, inner, cross_size=cross_size) for _ in range(config.num_fusion_layers)]
        )
        self.norm = nn.LayerNorm(size, eps=config.layer_norm_eps)
        self.pool = POOLINGS[config.fusion_pooling]


class CrossAttentionFusion(TransformerFusion):
    """Text queries attend to themselves, then to the image tokens (ALBEF / BLIP). Fused tokens are text tokens."""

    def __init__(self, config):
        super().__init__(config, cross=True)

    def forward(
        self,
        image_tokens,
        image_mask,
        text_tokens,
        text_mask,
        output_attentions=False,
        output_hidden=False,
        image_index=None,
    ):
        """`image_index` ([B] long, optional): pair b fuses text b with image `image_index[b]` of `image_tokens`
        [num_images, Ni, H]; the keys/values of an image shared by several pairs are computed once per layer."""
        self_mask, memory_mask = (
            additive_mask(text_mask, text_tokens.dtype),
            additive_mask(image_mask, text_tokens.dtype),
        )
        if memory_mask is not None and image_index is not None:
            memory_mask = memory_mask[image_index]
        hidden, maps, states = text_tokens, (), (text_tokens,)
        for layer in self.layers:
            hidden, _, cross = layer(
                hidden,
                self_mask,
                image_tokens,
                memory_mask,
                output_attentions=output_attentions,
                memory_index=image_index,
            )
            maps, states = maps + (cross,), states + (hidden,)
        hidden = self.norm(hidden)
        return FusionOutput(
            last_hidden_state=hidden,
            attention_mask=text_mask,
            pooler_output=self.pool(hidden, text_mask),
            cross_attentions=maps if output_attentions else None,
            hidden_states=states if output_hidden else None,
        )


class CoAttentionFusion(nn.Module):
    """Two streams (ViLBERT / LXMERT): in every layer text attends to image and image attends to text, in parallel."""

    def __init__(self, config):
        super().__init__()
        self.text_stream = TransformerFusion(config, cross=True)
        self.image_stream = TransformerFusion(config, cross=True)
        self.pooler = nn.Linear(2 * config.fusion_hidden_size, config.fusion_hidden_size)

    def forward(self, image_tokens, image_mask, text_tokens, text_mask, output_attentions=False, output_hidden=False):
        dtype = text_tokens.dtype
        text_keys, image_keys = additive_mask(text_mask, dtype), additive_mask(image_mask, dtype)
        text, image, maps, states = text_tokens, image_tokens, (), ()
        for text_layer, image_layer in zip(self.text_stream.layers, self.image_stream.layers):
            new_text, _, cross = text_layer(text, text_keys, image, image_keys, output_attentions=output_attentions)
            image, _, _ = image_layer(image, image_keys, text, text_keys)
            text = new_text
            maps, states = maps + (cross,), states + (torch.cat([text, image], dim=1),)
        text, image = self.text_stream.norm(text), self.image_stream.norm(image)
        tokens, mask = concat_tokens(text, text_mask, image, image_mask)
        pooled = torch.cat([self.text_stream.pool(text, text_mask), self.image_stream.pool(image, image_mask)], dim=-1)
        pooled = self.pooler(pooled)
        return FusionOutput(
            last_hidden_state=tokens,
            attention_mask=mask,
            pooler_output=pooled,
            cross_attentions=maps if output_attentions else None,
            hidden_states=(torch.cat([text_tokens, image_tokens], dim=1),) + states if output_hidden else None,
        )


class ConcatFusion(TransformerFusion):
    """Early fusion (ViLT / VisualBERT): one self-attention stream over [text; image] with modality embeddings."""

    def __init__(self, config):
        super().__init__(config, cross=False)
        self.modality_embeddings = nn.Embedding(2, config.fusion_hidden_size)

    def forward(self, image_tokens, image_mask, text_tokens, text_mask, output_attentions=False, output_hidden=False):
        num_text = text_tokens.shape[1]
        text_tokens = text_tokens + self.modality_embeddings.weight[0]
        image_tokens = image_tokens + self.modality_embeddings.weight[1]
        hidden, mask = concat_tokens(text_tokens, text_mask, image_tokens, image_mask)
        keys = additive_mask(mask, hidden.dtype)
        maps, states = (), (hidden,)
        for layer in self.layers:
            hidden, weights, _ = layer(hidden, keys, output_attentions=output_attentions)
            states = states + (hidden,)
            if output_attentions:  # the text-to-image block of the joint attention
                maps = maps + (weights[:, :, :num_text, num_text:],)
        hidden = self.norm(hidden)
        return FusionOutput(
            last_hidden_state=hidden,
            attention_mask=mask,
            pooler_output=self.pool(hidden, mask),
            cross_attentions=maps if output_attentions else None,
            hidden_states=states if output_hidden else None,
        )


class WeightedFusion(nn.Module):
    """Gated fusion of the pooled modalities (gated multimodal unit, Arevalo et al. 2017): no token interaction.

    pooled = z * tanh(W_t t) + (1 - z) * tanh(W_i i), with an input-dependent gate z = sigmoid(W_z [t; i]) per
    dimension, so the model learns per pair how much to trust each modality. The fused tokens are the two token
    sequences side by side, untouched.
    """

    def __init__(self, config):
        super().__init__()
        size = config.fusion_hidden_size
        self.text_transform = nn.Linear(size, size)
        self.image_transform = nn.Linear(size, size)
        self.gate = nn.Linear(2 * size, size)

    def forward(self, image_tokens, image_mask, text_tokens, text_mask, output_attentions=False, output_hidden=False):
        text, image = masked_mean(text_tokens, text_mask), masked_mean(image_tokens, image_mask)
        gate = torch.sigmoid(self.gate(torch.cat([text, image], dim=-1)))
        pooled = gate * torch.tanh(self.text_transform(text)) + (1 - gate) * torch.tanh(self.image_transform(image))
        tokens, mask = concat_tokens(text_tokens, text_mask, image_tokens, image_mask)
        return FusionOutput(
            last_hidden_state=tokens,
            attention_mask=mask,
            pooler_output=pooled,
            hidden_states=(tokens,) if output_hidden else None,
        )


class LateFusion(nn.Module):
    """No interaction: each modality is summarised alone and the summaries are mixed with learned weights.

    Every head on top is linear in `pooler_output`, so head(w_t * t + w_i * i) = w_t * head(t) + w_i * head(i) + b:
    each modality predicts and the predictions are combined with the learned weights w = softmax(modality_logits).
    """

    def __init__(self, config):
        super().__init__()
        size = config.fusion_hidden_size
        self.text_summary = nn.Linear(size, size)
        self.image_summary = nn.Linear(size, size)
        self.modality_logits = nn.Parameter(torch.zeros(2))

    def forward(self, image_tokens, image_mask, text_tokens, text_mask, output_attentions=False, output_hidden=False):
        weights = self.modality_logits.softmax(-1)
        text = self.text_summary(masked_mean(text_tokens, text_mask))
        image = self.image_summary(masked_mean(image_tokens, image_mask))
        tokens, mask = concat_tokens(text_tokens, text_mask, image_tokens, image_mask)
        return FusionOutput(
            last_hidden_state=tokens,
            attention_mask=mask,
            pooler_output=weights[0] * text + weights[1] * image,
            hidden_states=(tokens,) if output_hidden else None,
        )


@dataclass(frozen=True)
class FusionStrategy:
    """One `fusion_type`: its module and what the rest of vtfusion needs to know of it. Adding a strategy is one
    module class above and one entry in `FUSION_STRATEGIES`: the config, the heads, interpretability, model cards
    and the training CLI read everything from there."""

    module: type[nn.Module]
    description: str  # for the config docs, model cards and the `--fusion_type` help
    token_interaction: bool  # text and image tokens attend to each other: needs layers, draws attention maps
    shares_image_keys: bool = False  # forward takes `image_index`: pairs sharing an image share its keys/values
    pooling_only: tuple[str, ...] = ()  # submodules that feed only `pooler_output`, never the fused tokens


FUSION_STRATEGIES = {
    "cross_attention": FusionStrategy(
        CrossAttentionFusion,
        "text tokens attend to themselves, then to the image tokens (ALBEF / BLIP style)",
        token_interaction=True,
        shares_image_keys=True,
    ),
    "co_attention": FusionStrategy(
        CoAttentionFusion,
        "two streams, text attends to image and image to text in every layer (ViLBERT / LXMERT style)",
        token_interaction=True,
        pooling_only=("pooler",),
    ),
    "concat": FusionStrategy(
        ConcatFusion,
        "one self-attention stream over text and image tokens with modality embeddings (ViLT style)",
        token_interaction=True,
    ),
    "weighted": FusionStrategy(
        WeightedFusion,
        "learned, input-dependent gates over the pooled text and image vectors (gated multimodal unit)",
        token_interaction=False,
        pooling_only=("text_transform", "image_transform", "gate"),
    ),
    "late": FusionStrategy(
        LateFusion,
        "no interaction: each modality is summarised alone, the summaries mixed with learned weights",
        token_interaction=False,
        pooling_only=("text_summary", "image_summary", "modality_logits"),
    ),
}
FUSION_TYPES = tuple(FUSION_STRATEGIES)
# Fusion types whose text tokens attend to the image tokens: they return maps to draw.
ATTENTION_MAP_FUSION_TYPES = tuple(name for name, strategy in FUSION_STRATEGIES.items() if strategy.token_interaction)


def build_fusion(config) -> nn.Module:
    return FUSION_STRATEGIES[config.fusion_type].module(config)
