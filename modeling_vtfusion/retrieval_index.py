"""Search galleries too large for `VTFusionForImageTextRetrieval.rank`'s in-memory first stage: an approximate
nearest-neighbour index of the gallery's embeddings (FAISS, as clip-retrieval builds them), saved and loaded with the
gallery's ids, with the ITM re-ranking of `rank` on each query's candidates.

    index = GalleryIndex.build(model, processor, images=paths)           # embeds in batches, with a progress bar
    index.save("gallery-index"); index = GalleryIndex.load("gallery-index")
    ranking = index.rank(model, processor, text=["a red circle"], load=lambda ids: [paths[i] for i in ids], top_k=16)

The first stage finds each query's `top_k` candidates in the index by inner product of normalised embeddings (cosine);
the second fuses the query with each candidate and sorts them by ITM, re-encoding only the candidates (`load` returns
their images or texts), so a gallery's tokens are never kept. Galleries up to `exact_below` items get an exact
(flat) index; larger ones an HNSW graph (`faiss.IndexHNSWFlat`): `make bench` measures its recall against exact search
and its speed at 10k and 100k items. Needs `pip install faiss-cpu` (this module is not part of a checkpoint's code).
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F


HNSW_NEIGHBOURS = 32  # graph degree: recall@10 1.000 on 100k items (make bench); memory ~ (dim + 2 * 32) * 4 B an item
HNSW_SEARCH_DEPTH = 64  # candidates explored per query (faiss `efSearch`): recall against speed
HNSW_BUILD_DEPTH = 80  # candidates explored per insertion (faiss `efConstruction`): build time against recall


def faiss_module():
    try:
        import faiss
    except ImportError as error:
        raise ImportError("GalleryIndex needs FAISS: pip install faiss-cpu") from error
    return faiss


class GalleryIndex:
    """A FAISS index over the normalised embeddings of a gallery of images or texts (`modality`), item i of the
    gallery being id i."""

    def __init__(self, index, modality: str):
        self.index, self.modality = index, modality

    @classmethod
    def from_embeddings(cls, embeds: torch.Tensor, modality: str, exact_below: int = 20_000) -> "GalleryIndex":
        """An index of `embeds` [N, D] (normalised here): exact below `exact_below` items, HNSW above."""
        faiss = faiss_module()
        vectors = F.normalize(embeds.float(), dim=-1).numpy()
        if len(vectors) < exact_below:
            index = faiss.IndexFlatIP(vectors.shape[1])
        else:
            index = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_BUILD_DEPTH
            index.hnsw.efSearch = HNSW_SEARCH_DEPTH
        index.add(vectors)
        return cls(index, modality)

    @classmethod
    def build(cls, model, processor, images=None, texts=None, batch_size: int = 256, **kwargs) -> "GalleryIndex":
        """Embed a gallery of `images` (anything the processor reads: paths, PIL images, ...) or `texts`, `batch_size`
        at a time with a progress bar, and index it. `model`: any vtfusion model (its base model embeds)."""
        from tqdm.auto import tqdm

        if (images is None) == (texts is None):
            raise ValueError("GalleryIndex.build indexes one modality: pass images or texts, not both.")
        items, modality = (images, "image") if images is not None else (texts, "text")
        batches = range(0, len(items), batch_size)
        embeds = [embed(model, processor, modality, items[start : start + batch_size]) for start in tqdm(batches)]
        return cls.from_embeddings(torch.cat(embeds), modality, **kwargs)

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, query_embeds: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine scores and ids [num_queries, top_k] of each query's nearest gallery items, best first."""
        scores, ids = self.index.search(F.normalize(query_embeds.float(), dim=-1).numpy(), min(top_k, len(self)))
        return torch.from_numpy(scores), torch.from_numpy(ids)

    @torch.inference_mode()
    def rank(self, model, processor, load, images=None, text=None, top_k: int = 16):
        """Two-stage retrieval for queries of the other modality: index candidates, then ITM re-ranking.

        `model` is a `VTFusionForImageTextRetrieval` (it has the ITM head); `load(ids)` returns the gallery items of
        `ids` (images or texts) to re-encode. Returns a `VTFusionRankingOutput` with gallery ids.
        """
        query_modality = "text" if self.modality == "image" else "image"
        queries = text if query_modality == "text" else images
        if queries is None:
            raise ValueError(f"This index holds {self.modality}s: pass the queries as `{query_modality}`.")
        query_features = features(model, processor, query_modality, queries)  # embeddings and tokens, encoded once
        itc_scores, itc_ids = self.search(query_features.embeds, top_k)
        candidates = sorted(set(itc_ids.flatten().tolist()))
        position = {gallery_id: i for i, gallery_id in enumerate(candidates)}
        gallery = features(model, processor, self.modality, load(candidates))  # only the candidates are re-encoded
        local_ids = torch.tensor([[position[gallery_id] for gallery_id in row] for row in itc_ids.tolist()])
        ranking = model.rank_candidates(query_features, gallery, local_ids, itc_scores)
        ranking.indices = torch.tensor(candidates)[ranking.indices]  # back to gallery ids
        ranking.itc_indices = itc_ids
        return ranking

    def save(self, folder) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss_module().write_index(self.index, str(folder / "index.faiss"))
        (folder / "index.json").write_text(json.dumps({"modality": self.modality, "size": len(self)}) + "\n")

    @classmethod
    def load(cls, folder) -> "GalleryIndex":
        folder = Path(folder)
        info = json.loads((folder / "index.json").read_text())
        return cls(faiss_module().read_index(str(folder / "index.faiss")), info["modality"])


def embed(model, processor, modality: str, items) -> torch.Tensor:
    """Unnormalised projected embeddings [len(items), D] of images or texts."""
    base = model.base_model
    with torch.inference_mode():
        if modality == "image":
            return base.get_image_features(
                processor(images=list(items), return_tensors="pt")["pixel_values"]
            ).pooler_output
        inputs = processor(text=list(items), return_tensors="pt")
        inputs.pop("pixel_values", None)
        inputs.pop("token_type_ids", None)
        return base.get_text_features(**inputs).pooler_output


def features(model, processor, modality: str, items):
    """`retrieval_features` (embeddings and tokens, for ITM) of images or texts."""
    if modality == "image":
        return model.retrieval_features(
            pixel_values=processor(images=list(items), return_tensors="pt")["pixel_values"]
        )
    inputs = processor(text=list(items), return_tensors="pt")
    return model.retrieval_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
