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


def concat_features(parts: list) -> object:
    first = parts[0]
    return type(first)(**{key: torch.cat([getattr(part, key) for part in parts]) for key in first.keys()})


def vtfusion_retrieval(gallery_size: int) -> dict:
    """Seconds to index the gallery, to find every caption's top-k images by ITC alone, and to answer `NUM_QUERIES`
    queries each way in two stages."""
    model = build("vtfusion_retrieval").eval()
    start = time.perf_counter()
    image_parts, text_parts = [], []
    for batch in gallery_batches(gallery_size):
        image_parts.append(model.retrieval_features(pixel_values=batch["pixel_values"], batch_size=INDEX_BATCH))
        text_parts.append(
            model.retrieval_features(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], batch_size=INDEX_BATCH
            )
        )
    images, texts = concat_features(image_parts), concat_features(text_parts)
    index_seconds = time.perf_counter() - start

    start = time.perf_counter()
    chunk = query_chunk(gallery_size)
    with torch.inference_mode():  # ITC stage alone: every caption against every image, within the memory budget
        for rows in range(0, gallery_size, chunk):
            model.vtfusion.similarity(images.embeds, texts.embeds[rows : rows + chunk]).topk(TOP_K, dim=-1)
    itc_seconds = time.perf_counter() - start

    start = time.perf_counter()
    text_queries = type(texts)(
        embeds=texts.embeds[:NUM_QUERIES],
        tokens=texts.tokens[:NUM_QUERIES],
        attention_mask=texts.attention_mask[:NUM_QUERIES],
    )
    image_queries = type(images)(embeds=images.embeds[:NUM_QUERIES], tokens=images.tokens[:NUM_QUERIES])
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
    parts, ids, masks = [], [], []
    for batch in gallery_batches(gallery_size):
        for rows in range(0, len(batch["input_ids"]), INDEX_BATCH):
            chunk = {key: value[rows : rows + INDEX_BATCH] for key, value in batch.items()}
            parts.append(blip_features(model, chunk))
        ids.append(batch["input_ids"])
        masks.append(batch["attention_mask"])
    image_embeds, image_tokens, text_embeds = (torch.cat(part) for part in zip(*parts))
    ids, masks = torch.cat(ids), torch.cat(masks)
    index_seconds = time.perf_counter() - start

    start = time.perf_counter()
    (text_embeds @ image_embeds.t()).topk(TOP_K, dim=-1)  # ITC stage alone: BLIP's evaluation builds the full matrix
    itc_seconds = time.perf_counter() - start

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
        "itc_s": itc_seconds,
        "query_s": query_seconds,
        "queries": 2 * NUM_QUERIES,
        "hits": hits,
    }


RETRIEVAL = {"vtfusion": vtfusion_retrieval, "peer": blip_retrieval}
