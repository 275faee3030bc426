"""Serving rows: the FAISS index of large galleries (`modeling_vtfusion.retrieval_index`) against exact search, and
int8 / ONNX Runtime CPU inference (`modeling_vtfusion.cpu_inference`) against fp32 PyTorch on the main job's model.

Index: at 10k, the main job's embeddings of 10,000 SynthShapes training images, searched with the embeddings of
1,000 of their captions (text-to-image, as the index is used); at 100k, synthetic: each of those 10,000 image
embeddings and 9 jittered copies (Gaussian noise of std 0.05 a dimension, renormalised), since embedding 100k images
would take this bench several minutes. Without the main job's output (`make demo`), both sizes use Gaussian clusters
(1,000 centres), a harder geometry whose neighbours are nearly equidistant (recall@10 0.47 at 100k with the default
search depth). Recall@k: the share of the exact top-k the index returns, over the 1,000 queries.
"""

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from modeling_vtfusion.retrieval_index import GalleryIndex

from .timing import interleaved_times, median


NUM_QUERIES, EMBED_DIM = 1000, 128


def clustered_embeddings(num_items: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(1000, EMBED_DIM, generator=generator)
    labels = torch.randint(len(centres), (num_items,), generator=generator)
    return F.normalize(centres[labels] + 0.5 * torch.randn(num_items, EMBED_DIM, generator=generator), dim=-1)


def main_job_embeddings(model_dir: Path, num_images: int = 10_000) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Image embeddings of the first SynthShapes training scenes and text embeddings of 1,000 of their captions."""
    from modeling_vtfusion import VTFusionModel, VTFusionProcessor
    from modeling_vtfusion.retrieval_index import embed
    from training.args import default_synthshapes_dir
    from training.synthshapes import INFO_FILE, load_synthshapes

    scenes = Path(default_synthshapes_dir(20_000, 0))
    if not (model_dir / "model.safetensors").exists() or not (scenes / INFO_FILE).exists():
        return None
    model, processor = VTFusionModel.from_pretrained(model_dir).eval(), VTFusionProcessor.from_pretrained(model_dir)
    train = load_synthshapes(scenes)["train"].select(range(num_images))
    images = torch.cat(
        [embed(model, processor, "image", b["image"]) for b in train.select_columns(["image"]).iter(512)]
    )
    return images, embed(model, processor, "text", list(train["caption"][:NUM_QUERIES]))


def jittered_copies(embeds: torch.Tensor, copies: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    repeated = F.normalize(embeds, dim=-1).repeat(copies, 1)
    return F.normalize(repeated + 0.05 * torch.randn(repeated.shape, generator=generator), dim=-1)


def recall(found: torch.Tensor, exact: torch.Tensor) -> float:
    return sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), exact.tolist())) / exact.numel()


def index_bytes(index: GalleryIndex) -> int:
    import faiss

    return faiss.serialize_index(index.index).nbytes


def searcher(index: GalleryIndex, queries: torch.Tensor):
    return lambda: index.search(queries, 10)


def ann_rows(model_dir: Path, rounds: int = 3) -> list[dict]:
    from .run import row

    real = main_job_embeddings(model_dir)
    if real is None:
        galleries = {size: clustered_embeddings(size, seed=0) for size in (10_000, 100_000)}
        queries, source = (
            clustered_embeddings(NUM_QUERIES, seed=1),
            "synthetic Gaussian clusters (no `make demo` output)",
        )
    else:
        galleries = {10_000: real[0], 100_000: jittered_copies(real[0], 10)}
        queries, source = real[1], "main job's SynthShapes embeddings; 100k: 10 jittered copies of each (synthetic)"
    rows = []
    for size, gallery in galleries.items():
        start = time.perf_counter()
        approximate = GalleryIndex.from_embeddings(gallery, "image", exact_below=0)
        build_seconds = time.perf_counter() - start
        exact = GalleryIndex.from_embeddings(gallery, "image", exact_below=size + 1)
        exact_ids = exact.search(queries, 10)[1]
        found = approximate.search(queries, 10)[1]
        cases = {"hnsw": approximate, "exact": exact}
        times = interleaved_times({name: searcher(index, queries) for name, index in cases.items()}, rounds)
        label = f"{size // 1000}k"
        suffix = "" if size == max(galleries) else f"_{label}"  # `ann_recall_at_10`: at the largest size
        note = f"HNSW32 vs exact inner product at {label}, {NUM_QUERIES} caption queries; {source}"
        rows += [
            row(f"ann_recall_at_1{suffix}", recall(found[:, :1], exact_ids[:, :1]), None, "recall", note=note),
            row(f"ann_recall_at_10{suffix}", recall(found, exact_ids), None, "recall", note=note),
            row(
                f"ann_queries_per_s_{label}",
                NUM_QUERIES / median(times["hnsw"]),
                NUM_QUERIES / median(times["exact"]),
                "queries/s",
                note="peer: exact search (faiss IndexFlatIP, one matrix product) of the same embeddings",
            ),
            row(
                f"ann_index_mib_{label}",
                index_bytes(approximate) / 2**20,
                index_bytes(exact) / 2**20,
                "MiB",
                higher_is_better=False,
                note=f"serialised index; HNSW built in {build_seconds:.1f} s",
            ),
        ]
    return rows


# -- CPU inference: int8 and ONNX Runtime against fp32 ---------------------------------------------------------------


def synthshapes_test_inputs(processor, num_scenes: int = 500):
    """The first SynthShapes test scenes: images, one caption each (retrieval) and statements with labels."""
    from training.args import default_synthshapes_dir
    from training.synthshapes import load_synthshapes

    test = load_synthshapes(Path(default_synthshapes_dir(20_000, 0)))["test"].select(range(num_scenes))
    images = processor(images=list(test["image"]), return_tensors="pt")["pixel_values"]
    captions = processor(text=list(test["caption"]), return_tensors="pt")
    statements = processor(text=list(test["statement"]), return_tensors="pt")
    return images, captions, statements


def outputs(image_embeds, text_embeds, logits, images, captions, statements, batch: int = 100):
    """Image and caption embeddings and entailment logits, `batch` scenes at a time."""
    results = {"image": [], "text": [], "logits": []}
    for start in range(0, len(images), batch):
        part = slice(start, start + batch)
        results["image"].append(image_embeds(pixel_values=images[part]))
        results["text"].append(
            text_embeds(input_ids=captions["input_ids"][part], attention_mask=captions["attention_mask"][part])
        )
        results["logits"].append(
            logits(
                pixel_values=images[part],
                input_ids=statements["input_ids"][part],
                attention_mask=statements["attention_mask"][part],
            )
        )
    return {name: torch.cat(values) for name, values in results.items()}


def agreement(candidate: dict, reference: dict) -> dict[str, float]:
    top1 = lambda out: (out["text"] @ out["image"].t()).argmax(-1)  # noqa: E731  text-to-image retrieval
    return {
        "retrieval_top1": (top1(candidate) == top1(reference)).float().mean().item(),
        "entailment_top1": (candidate["logits"].argmax(-1) == reference["logits"].argmax(-1)).float().mean().item(),
        "max_abs_diff_embeds": max((candidate[n] - reference[n]).abs().max().item() for n in ("image", "text")),
    }


def cpu_inference_rows(model_dir: Path, rounds: int = 3) -> list[dict]:
    import tempfile

    from modeling_vtfusion import VTFusionForSequenceClassification, VTFusionProcessor
    from modeling_vtfusion.cpu_inference import (
        ClassificationLogits,
        ImageEmbeds,
        OnnxPart,
        TextEmbeds,
        export_onnx,
        quantize_int8,
    )

    from .run import row

    if not (model_dir / "model.safetensors").exists():
        return [row("int8_speedup", None, None, f"run `make demo` first ({model_dir} is missing)")]
    model = VTFusionForSequenceClassification.from_pretrained(model_dir).eval()
    processor = VTFusionProcessor.from_pretrained(model_dir)
    inputs = synthshapes_test_inputs(processor)

    def torch_parts(m):
        return ImageEmbeds(m), TextEmbeds(m), ClassificationLogits(m)

    int8 = quantize_int8(model)
    with tempfile.TemporaryDirectory(prefix="vtfusion-onnx-") as folder:  # sessions hold the graphs once loaded
        paths = export_onnx(model, folder, processor)
        parts = ("image_embeds", "text_embeds", "logits")
        onnx = tuple(OnnxPart(paths[name], threads=torch.get_num_threads()) for name in parts)
        onnx_bytes = paths["logits"].stat().st_size  # the classification graph holds every weight the three parts use
    variants = {"fp32": torch_parts(model), "int8": torch_parts(int8), "onnx": onnx}
    with torch.inference_mode():
        results = {name: outputs(*parts, *inputs) for name, parts in variants.items()}
        times = interleaved_times(
            {name: (lambda p=parts: outputs(*p, *inputs)) for name, parts in variants.items()}, rounds
        )
    sizes = {
        "fp32": (model_dir / "model.safetensors").stat().st_size,
        "int8": state_dict_bytes(int8),
        "onnx": onnx_bytes,
    }
    rows = []
    for name in ("int8", "onnx"):
        agree = agreement(results[name], results["fp32"])
        note = (
            f"500 SynthShapes test scenes, main job's model: image + caption embeddings and entailment logits; "
            f"agreement with fp32: retrieval top-1 {agree['retrieval_top1']:.3f}, entailment {agree['entailment_top1']:.3f}, "
            f"largest embedding difference {agree['max_abs_diff_embeds']:.2g}"
        )
        seconds = {variant: median(times[variant]) for variant in ("fp32", name)}
        rows.append(row(f"{name}_speedup", 500 / seconds[name], 500 / seconds["fp32"], "scenes/s", note=note, **agree))
        rows.append(row(f"{name}_size", sizes[name] / 2**20, sizes["fp32"] / 2**20, "MiB", higher_is_better=False))
    return rows


def state_dict_bytes(model) -> int:
    import io

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()
