"""Cross-attention heat maps: where in the image each text token looked, drawn over the image.

The attention fusion types (`cross_attention`, `co_attention`, `concat`) return, with `output_attentions=True`, the
text-to-image attention of every fusion layer, `[B, heads, Nt, Ni]`. Averaged over heads and layers, one text token's
row is a distribution over the image tokens; without the encoder's prefix tokens (ViT's [CLS]) and folded back to the
patch grid, it is a heat map over the image. `pooled` maps average the word tokens of the text.

    explanation = explain(model, processor, image, "the red circle")   # maps as tensors
    save_attention_maps(model, processor, image, "the red circle", "attention.png")  # and as a figure

`attention_peak_hit_rate` measures how often a word's map peaks on the object the word names (e.g. SynthShapes
shapes), against the rate a random patch would reach. matplotlib is needed only to draw, and imported there.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .image_utils import to_rgb_images


@dataclass
class AttentionExplanation:
    """
    tokens (`list[str]`): the text's tokens, special ones included.
    token_maps (`[Nt, rows, cols]`): each token's attention over the image patches (each map sums to 1).
    pooled (`[rows, cols]`): the mean map of the word tokens (no [CLS], [SEP] or padding).
    image: the RGB image the maps lie over.
    """

    tokens: list[str]
    token_maps: torch.Tensor
    pooled: torch.Tensor
    image: object

    def word_map(self, word: str) -> torch.Tensor:
        """The map of `word`: the mean of its word pieces' maps (the first occurrence of the word)."""
        positions = word_positions(self.tokens, word)
        if not positions:
            raise ValueError(f"{word!r} is not among the tokens {self.tokens}.")
        return self.token_maps[positions].mean(0)


def patch_grid(vision_config, num_image_tokens: int) -> tuple[int, int, int]:
    """(rows, cols, prefix tokens) of an encoder's image tokens: ViT-like configs from image and patch size (the
    rest are prefix tokens, e.g. [CLS]), other encoders (CNN feature maps) as the largest square grid."""
    image_size, patch_size = getattr(vision_config, "image_size", None), getattr(vision_config, "patch_size", None)
    if isinstance(image_size, int) and isinstance(patch_size, int):
        rows = cols = image_size // patch_size
    else:
        rows = cols = math.isqrt(num_image_tokens)
    prefix = num_image_tokens - rows * cols
    if not 0 <= prefix <= 2:
        raise ValueError(f"Cannot fold {num_image_tokens} image tokens into a patch grid ({rows}x{cols} + prefix).")
    return rows, cols, prefix


def token_heat_maps(cross_attentions, grid: tuple[int, int, int], layers=None) -> torch.Tensor:
    """Per-layer text-to-image attention [B, heads, Nt, Ni] -> each token's map [B, Nt, rows, cols], the mean over
    heads and `layers` (default: all), prefix tokens dropped and each map renormalised to sum to 1."""
    rows, cols, prefix = grid
    selected = [cross_attentions[i] for i in layers] if layers is not None else list(cross_attentions)
    attention = torch.stack([layer.float() for layer in selected]).mean(dim=(0, 2))  # [B, Nt, Ni]
    patches = attention[..., prefix:]  # [B, Nt, rows * cols]
    patches = patches / patches.sum(-1, keepdim=True).clamp(min=1e-12)
    return patches.unflatten(-1, (rows, cols))


def pooled_heat_map(token_maps: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
    """The mean map of the word tokens: token_maps [B, Nt, rows, cols], word_mask [B, Nt] -> [B, rows, cols]."""
    weights = word_mask.to(token_maps.dtype)[..., None, None]
    return (token_maps * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def upsample(heat_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[rows, cols] -> [height, width], bilinear, scaled to [0, 1] for display."""
    image = F.interpolate(heat_map[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
    return (image - image.min()) / (image.max() - image.min()).clamp(min=1e-12)


@torch.no_grad()
def explain(model, processor, image, text: str, layers=None) -> AttentionExplanation:
    """Runs `model` (any vtfusion head, or `VTFusionModel`) on one image and text and returns its attention maps."""
    base = getattr(model, "vtfusion", model)
    inputs = processor(images=[image], text=[text], return_tensors="pt").to(base.device)
    outputs = base(**inputs, output_attentions=True)
    if outputs.cross_attentions is None:
        raise ValueError(f"fusion_type={base.config.fusion_type!r} has no cross-attention to draw.")
    num_image_tokens = outputs.cross_attentions[0].shape[-1]
    grid = patch_grid(base.config.vision_config, num_image_tokens)
    token_maps = token_heat_maps(outputs.cross_attentions, grid, layers)[0].cpu()  # [Nt, rows, cols]
    ids = inputs["input_ids"][0].cpu()
    special = torch.tensor(processor.tokenizer.all_special_ids)
    word_mask = ~torch.isin(ids, special) & inputs["attention_mask"][0].cpu().bool()
    return AttentionExplanation(
        tokens=processor.tokenizer.convert_ids_to_tokens(ids.tolist()),
        token_maps=token_maps,
        pooled=pooled_heat_map(token_maps[None], word_mask[None])[0],
        image=to_rgb_images([image])[0],
    )


def save_attention_maps(
    model, processor, image, text: str, path, words=None, layers=None, alpha: float = 0.5
) -> AttentionExplanation:
    """Draws the image, the pooled map and one map per word of `text` (or per word of `words`) side by side over the
    image, and saves the figure as a PNG at `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    explanation = explain(model, processor, image, text, layers)
    words = list(words) if words is not None else text.split()
    panels = [("image", None), (f"{text!r}", explanation.pooled)] + [(w, explanation.word_map(w)) for w in words]
    figure = Figure(figsize=(2.4 * len(panels), 2.6))
    FigureCanvasAgg(figure)  # draws without pyplot, so the caller's matplotlib backend is left alone
    picture = explanation.image
    for index, (title, heat_map) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        axes.imshow(picture)
        if heat_map is not None:
            axes.imshow(upsample(heat_map, (picture.height, picture.width)).numpy(), cmap="jet", alpha=alpha)
        axes.set_title(title, fontsize=9)
        axes.axis("off")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    return explanation


def attention_peak_hit_rate(model, processor, examples, layers=None) -> dict[str, float]:
    """How often a word's heat map peaks on the object it names, and how often a random patch would.

    Args:
        examples: dicts with `image`, `text`, `word` (a word of the text) and `box` (the object's `(left, top,
            right, bottom)` in the image's pixels).

    Returns:
        `hit_rate` (share of maps whose hottest patch overlaps the box), `chance_rate` (mean share of patches that
        overlap the box: the hit rate of a uniformly random peak) and `num_maps`.
    """
    hits, chances = [], []
    for example in examples:
        explanation = explain(model, processor, example["image"], example["text"], layers)
        heat_map = explanation.word_map(example["word"])  # [rows, cols]
        inside = box_patches(example["box"], explanation.image.size, heat_map.shape)  # [rows, cols] bool
        hits.append(bool(inside.flatten()[heat_map.argmax()]))
        chances.append(inside.float().mean().item())
    count = max(1, len(hits))
    return {"hit_rate": sum(hits) / count, "chance_rate": sum(chances) / count, "num_maps": len(hits)}


def box_patches(box, image_size: tuple[int, int], grid_shape: tuple[int, int]) -> torch.Tensor:
    """[rows, cols] bool: the patches that overlap `box` (left, top, right, bottom in pixels of an image of
    `image_size` (width, height), which the patch grid covers whole)."""
    width, height = image_size
    rows, cols = grid_shape
    left, top, right, bottom = box
    row_edges, col_edges = torch.arange(rows + 1) * height / rows, torch.arange(cols + 1) * width / cols
    row_overlap = (row_edges[1:] > top) & (row_edges[:-1] < bottom)
    col_overlap = (col_edges[1:] > left) & (col_edges[:-1] < right)
    return row_overlap[:, None] & col_overlap[None, :]


def word_positions(tokens: list[str], word: str) -> list[int]:
    """Positions of the first occurrence of `word` among WordPiece tokens (its pieces after the first start '##')."""
    word = word.lower()
    for start, token in enumerate(tokens):
        pieces, text = [start], token
        while len(text) < len(word) and pieces[-1] + 1 < len(tokens) and tokens[pieces[-1] + 1].startswith("##"):
            pieces.append(pieces[-1] + 1)
            text += tokens[pieces[-1]][2:]
        if text == word:
            return pieces
    return []


__all__ = [
    "AttentionExplanation",
    "attention_peak_hit_rate",
    "explain",
    "patch_grid",
    "pooled_heat_map",
    "save_attention_maps",
    "token_heat_maps",
    "upsample",
]
