"""Retrieval at scale: index a gallery of N images and N captions, then answer queries in two stages.

vtfusion: `retrieval_features` (embeddings and tokens, in batches under `torch.inference_mode`) and `rank` (ITC
top-k by matrix product over chunks of `QUERY_CHUNK` queries, then ITM re-ranking of the top-k only). The ITC stage
alone, every caption against the whole gallery, runs in chunks sized to `SIMILARITY_BUDGET_BYTES`. BLIP does the same with its own parts, as BLIP's evaluation code does: a full
[queries, N] similarity matrix, then its text encoder with cross-attention over each query's top-k candidates.

Images and captions are random and generated batch by batch, so the inputs never sit in memory all at once.
"""

import time

import torch
import torch.nn.functional as F

from modeling_vtfusion.modeling_vtfusion import VTFusionRetrievalFeatures

from .models import build, random_batch


INDEX_BATCH, QUERY_CHUNK, TOP_K, NUM_QUERIES = 256, 64, 16, 32
SIMILARITY_BUDGET_BYTES = 64 * 2**20  # the ITC stage never holds a [queries, gallery] block larger than this


def query_chunk(gallery_size: int) -> int:
    """Queries per ITC chunk so that a [chunk, gallery] fp32 similarity block fits `SIMILARITY_BUDGET_BYTES`."""
    return max(1, SIMILARITY_BUDGET_BYTES // (4 * gallery_size))


def gallery_batches(size: int, batch_size: int = INDEX_BATCH):
    """Random image/caption batches covering a gallery of `size` pairs, generated on the fly (seeded)."""
    for index, start in enumerate(range(0, size, batch_size)):
        yield random_batch(min(batch_size, size - start), seed=1000 + index)


def best_seconds(fn, repeats: int = 3) -> float:
    """Fastest of a few calls: for stages that take milliseconds, where one call is mostly noise."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


class GalleryTensors:
    """Per-item tensors of a gallery, written batch by batch into tensors allocated once for the whole gallery (no
    list of parts to concatenate at the end, so the gallery is held once, not twice)."""

    def __init__(self, size: int):
        self.size, self.filled, self.tensors = size, 0, {}

    def add(self, **parts: torch.Tensor) -> None:
        rows = next(iter(parts.values())).shape[0]
        for key, part in parts.items():
            if key not in self.tensors:
                self.tensors[key] = part.new_empty((self.size, *part.shape[1:]))
            self.tensors[key][self.filled : self.filled + rows] = part
        self.filled += rows


def vtfusion_retrieval(gallery_size: int) -> dict:
    """Seconds to index the gallery, to find every caption's top-k images by ITC alone, and to answer `NUM_QUERIES`
    queries each way in two stages."""
    model = build("vtfusion_retrieval").eval()
    start = time.perf_counter()
    images, texts = GalleryTensors(gallery_size), GalleryTensors(gallery_size)
    for batch in gallery_batches(gallery_size):
        images.add(**model.retrieval_features(pixel_values=batch["pixel_values"], batch_size=INDEX_BATCH))
        texts.add(
            **model.retrieval_features(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], batch_size=INDEX_BATCH
            )
        )
    images, texts = VTFusionRetrievalFeatures(**images.tensors), VTFusionRetrievalFeatures(**texts.tensors)
    index_seconds = time.perf_counter() - start

    chunk = query_chunk(gallery_size)

    @torch.inference_mode()
    def itc_stage():  # every caption against every image, within the memory budget; cosine ranks as the logits do
        for rows in range(0, gallery_size, chunk):
            (texts.embeds[rows : rows + chunk] @ images.embeds.t()).topk(TOP_K, dim=-1)

    itc_seconds = best_seconds(itc_stage)

    start = time.perf_counter()
    text_queries = VTFusionRetrievalFeatures(**{key: value[:NUM_QUERIES] for key, value in texts.items()})
    image_queries = VTFusionRetrievalFeatures(**{key: value[:NUM_QUERIES] for key, value in images.items()})
    text_to_image = model.rank(text_queries, images, top_k=TOP_K, batch_size=QUERY_CHUNK)
    model.rank(image_queries, texts, top_k=TOP_K, batch_size=QUERY_CHUNK)
    query_seconds = time.perf_counter() - start
    hits = int((text_to_image.indices[:, 0] == torch.arange(NUM_QUERIES)).sum())  # random weights: near chance
    return {
        "index_s": index_seconds,
        "itc_s": itc_seconds,
        "query_s": query_seconds,
        "queries": 2 * NUM_QUERIES,
        "hits": hits,
    }


@torch.inference_mode()
def blip_features(model, batch):
    image_tokens = model.vision_model(pixel_values=batch["pixel_values"]).last_hidden_state
    text_tokens = model.text_encoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    image_embeds = F.normalize(model.vision_proj(image_tokens[:, 0]), dim=-1)
    text_embeds = F.normalize(model.text_proj(text_tokens[:, 0]), dim=-1)
    return image_embeds, image_tokens, text_embeds


@torch.inference_mode()
def blip_match_scores(model, image_tokens, input_ids, attention_mask):
    hidden = model.text_encoder(
        input_ids=input_ids,
        attention_mask=attention_mask,
        encoder_hidden_states=image_tokens,
        encoder_attention_mask=torch.ones(image_tokens.shape[:2], dtype=torch.long),
    ).last_hidden_state
    return model.itm_head(hidden[:, 0]).log_softmax(-1)[:, 1]


@torch.inference_mode()
def blip_retrieval(gallery_size: int) -> dict:
    """The same pipeline with BLIP's parts; the captions' ids are kept, as BLIP re-encodes texts with every image."""
    model = build("blip_retrieval").eval()
    start = time.perf_counter()
    gallery = GalleryTensors(gallery_size)
    for batch in gallery_batches(gallery_size):
        image_embeds, image_tokens, text_embeds = blip_features(model, batch)
        gallery.add(
            image_embeds=image_embeds,
            image_tokens=image_tokens,
            text_embeds=text_embeds,
            ids=batch["input_ids"],
            masks=batch["attention_mask"],
        )
    image_embeds, image_tokens, text_embeds, ids, masks = gallery.tensors.values()
    index_seconds = time.perf_counter() - start

    start = time.perf_counter()
    k = min(TOP_K, gallery_size)
    # text -> image: all similarities of the queries at once, then each text with its k candidate images
    candidates = (text_embeds[:NUM_QUERIES] @ image_embeds.t()).topk(k, dim=-1).indices  # [q, k]
    scores = blip_match_scores(
        model,
        image_tokens[candidates.flatten()],
        ids[:NUM_QUERIES].repeat_interleave(k, 0),
        masks[:NUM_QUERIES].repeat_interleave(k, 0),
    )
    text_to_image = candidates.gather(-1, scores.view(-1, k).argsort(-1, descending=True))
    # image -> text
    candidates = (image_embeds[:NUM_QUERIES] @ text_embeds.t()).topk(k, dim=-1).indices
    scores = blip_match_scores(
        model,
        image_tokens[:NUM_QUERIES].repeat_interleave(k, 0),
        ids[candidates.flatten()],
        masks[candidates.flatten()],
    )
    candidates.gather(-1, scores.view(-1, k).argsort(-1, descending=True))
    query_seconds = time.perf_counter() - start
    hits = int((text_to_image[:, 0] == torch.arange(NUM_QUERIES)).sum())
    return {
        "index_s": index_seconds,
        "query_s": query_seconds,
        "queries": 2 * NUM_QUERIES,
        "hits": hits,
    }


RETRIEVAL = {"vtfusion": vtfusion_retrieval, "peer": blip_retrieval}
