"""Large galleries: a FAISS index of the embeddings, saved and loaded, with ITM re-ranking of its candidates."""

import pytest
import torch
import torch.nn.functional as F
from colour_checkpoint import colour_processor, save_trained_colour_checkpoint
from pipeline_runs import CAPTIONS, colour_image

from modeling_vtfusion import VTFusionForImageTextRetrieval
from modeling_vtfusion.retrieval_index import GalleryIndex


def clustered(num_items: int, dim: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(50, dim, generator=generator)
    return centres[torch.randint(50, (num_items,), generator=generator)] + 0.3 * torch.randn(
        num_items, dim, generator=generator
    )


@pytest.mark.parametrize("exact_below", [10**9, 0], ids=["flat", "hnsw"])
def test_the_index_finds_the_nearest_items_by_cosine(exact_below):
    gallery, queries = clustered(2000), clustered(50, seed=1)
    index = GalleryIndex.from_embeddings(gallery, "image", exact_below=exact_below)
    _, ids = index.search(queries, top_k=10)
    exact = (F.normalize(queries, dim=-1) @ F.normalize(gallery, dim=-1).t()).topk(10).indices
    overlap = sum(len(set(a) & set(b)) for a, b in zip(ids.tolist(), exact.tolist())) / exact.numel()
    assert overlap >= 0.95 and type(index.index).__name__ == ("IndexFlatIP" if exact_below else "IndexHNSWFlat")


def test_a_saved_index_loads_with_the_same_answers(tmp_path):
    index = GalleryIndex.from_embeddings(clustered(500), "text", exact_below=0)
    index.save(tmp_path / "index")
    loaded = GalleryIndex.load(tmp_path / "index")
    queries = clustered(5, seed=2)
    assert loaded.modality == "text" and len(loaded) == 500
    assert torch.equal(loaded.search(queries, 3)[1], index.search(queries, 3)[1])


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("colour-model")
    processor = colour_processor()
    save_trained_colour_checkpoint(folder, processor)
    return VTFusionForImageTextRetrieval.from_pretrained(folder).eval(), processor


def test_text_queries_find_their_image_and_itm_reranks_the_candidates(colour_model):
    model, processor = colour_model
    colours = list(CAPTIONS) * 4  # 12 images, 4 of each colour
    images = [colour_image(colour) for colour in colours]
    index = GalleryIndex.build(model, processor, images=images, batch_size=5)
    loaded = []

    def load(ids):
        loaded.extend(ids)
        return [images[i] for i in ids]

    ranking = index.rank(model, processor, load, text=[CAPTIONS["green"], CAPTIONS["blue"]], top_k=4)

    assert [colours[i] for i in ranking.indices[0].tolist()] == ["green"] * 4
    assert [colours[i] for i in ranking.indices[1].tolist()] == ["blue"] * 4
    assert (ranking.scores[:, :-1] >= ranking.scores[:, 1:]).all()  # sorted by ITM
    assert len(set(loaded)) == len(loaded) <= 8  # only the candidates were re-encoded, each once


def test_an_image_query_on_an_image_index_is_refused_with_the_right_name(colour_model):
    model, processor = colour_model
    index = GalleryIndex.build(model, processor, images=[colour_image("red")])
    with pytest.raises(ValueError, match="pass the queries as `text`"):
        index.rank(model, processor, lambda ids: [], images=[colour_image("red")])
