"""vtfusion demo: a web page over a saved checkpoint (`make app`, or as the `app.py` of a Hugging Face Space).

    MODEL=outputs/vtfusion-synthshapes PORT=7860 python app/app.py

Tabs: zero-shot labels for an image, text-to-image search over a folder of images, captioning and question answering,
entailment of a statement, and the cross-attention heat map of a word. The model loads through the public API only
(Auto classes and pipelines with `trust_remote_code=True`), so this file needs transformers, torch and gradio, not
vtfusion: copy it with `requirements.txt` into a Space whose `MODEL` variable names a vtfusion checkpoint on the Hub.
Bad input (no image, not an image, an empty text, a folder without images) is answered in the page.
"""

import functools
import os
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from transformers import AutoModel, AutoProcessor, pipeline


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
MAX_GALLERY = 10_000


class Demo:
    """The checkpoint's pipelines and base model, each loaded on first use."""

    def __init__(self, model: str):
        self.model = model
        self.pipelines, self.galleries = {}, {}

    def pipeline(self, task: str):
        if task not in self.pipelines:
            self.pipelines[task] = pipeline(task, model=self.model, trust_remote_code=True)
        return self.pipelines[task]

    @functools.cached_property
    def base(self):
        return AutoModel.from_pretrained(self.model, trust_remote_code=True).eval()

    @functools.cached_property
    def processor(self):
        return AutoProcessor.from_pretrained(self.model, trust_remote_code=True)

    # -- tabs ----------------------------------------------------------------------------------------------------

    def zero_shot(self, image, labels: str) -> dict[str, float]:
        candidates = [label.strip() for label in labels.split(",") if label.strip()]
        if len(candidates) < 2:
            raise gr.Error("Type at least two labels, separated by commas.")
        results = self.pipeline("zero-shot-image-classification")(
            needs_image(image), candidate_labels=candidates, hypothesis_template="{}"
        )
        return {result["label"]: result["score"] for result in results}

    def caption_or_answer(self, image, question: str | None) -> str:
        """An empty question asks for a caption."""
        generate = self.pipeline("image-text-to-text")
        output = generate(needs_image(image), text=(question or "").strip(), return_full_text=False)
        return output[0]["generated_text"].strip()

    def entailment(self, image, statement: str) -> dict[str, float]:
        results = self.pipeline("image-text-classification")(needs_image(image), text=needs_text(statement))
        return {result["label"]: result["score"] for result in results}

    def search(self, folder: str, query: str, top_k: int) -> list[tuple[Image.Image, str]]:
        paths, embeds = self.gallery(needs_folder(folder))
        with torch.no_grad():
            text = self.processor(text=[needs_text(query)], return_tensors="pt")
            text.pop("pixel_values", None)
            query_embed = torch.nn.functional.normalize(self.base.get_text_features(**text).pooler_output, dim=-1)
        scores, indices = (query_embed @ embeds.t())[0].topk(min(int(top_k), len(paths)))
        return [(Image.open(paths[i]), f"{paths[i].name}  {score:.3f}") for score, i in zip(scores.tolist(), indices)]

    def gallery(self, folder: Path) -> tuple[list[Path], torch.Tensor]:
        """The folder's images and their normalised embeddings, computed once per folder, 64 at a time."""
        if folder not in self.galleries:
            self.galleries[folder] = self.embed_folder(folder)
        return self.galleries[folder]

    def embed_folder(self, folder: Path) -> tuple[list[Path], torch.Tensor]:
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:MAX_GALLERY]
        if not paths:
            raise gr.Error(f"{folder} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))}).")
        embeds = []
        with torch.no_grad():
            for start in range(0, len(paths), 64):
                images = [read_image(path) for path in paths[start : start + 64]]
                pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
                embeds.append(
                    torch.nn.functional.normalize(self.base.get_image_features(pixels).pooler_output, dim=-1)
                )
        return paths, torch.cat(embeds)

    def heat_map(self, image, text: str, word: str) -> Image.Image:
        """Where `word` of `text` looked in the image: its cross-attention, averaged over heads and fusion layers."""
        image, text, word = needs_image(image).convert("RGB"), needs_text(text), needs_text(word).lower()
        inputs = self.processor(images=[image], text=[text], return_tensors="pt")
        with torch.no_grad():
            maps = self.base(**inputs, output_attentions=True).cross_attentions
        if not maps:
            raise gr.Error("This checkpoint's fusion type has no cross-attention to draw (weighted or late fusion).")
        positions = word_tokens(self.processor.tokenizer(text), text, word)
        if not positions:
            raise gr.Error(f"'{word}' is not a word of the text.")
        token_map = torch.stack(maps).mean(dim=(0, 2))[0, positions].mean(0)  # [image tokens]
        side = int(len(token_map) ** 0.5)
        grid = token_map[len(token_map) - side * side :].reshape(side, side)  # without a ViT's [CLS]
        return overlay(image, (grid / grid.max()).numpy())


def word_tokens(encoding, text: str, word: str) -> list[int]:
    """Token positions of the first word of `text` equal to `word` (lower case), from the tokenizer's word alignment:
    all its word pieces, and no other word's (a substring test would count "a" as part of "square")."""
    for index in dict.fromkeys(i for i in encoding.word_ids() if i is not None):
        chars = encoding.word_to_chars(index)
        if text[chars.start : chars.end].lower() == word:
            tokens = encoding.word_to_tokens(index)
            return list(range(tokens.start, tokens.end))
    return []


def needs_image(image) -> Image.Image:
    if image is None:
        raise gr.Error("Upload an image first.")
    image.thumbnail((2048, 2048))  # an 8000x8000 photo is shrunk in place before any model sees it
    return image


def needs_text(text: str | None) -> str:
    if not text or not text.strip():
        raise gr.Error("Type a text first.")
    return text.strip()


def needs_folder(folder: str | None) -> Path:
    path = Path(folder or "").expanduser()
    if not folder or not path.is_dir():
        raise gr.Error(f"'{folder}' is not a folder on this machine.")
    return path.resolve()


def read_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.draft("RGB", (512, 512))  # JPEGs decode at reduced size: a gallery of photos stays light
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise gr.Error(f"{path.name} is not a readable image: {error}") from error


def overlay(image: Image.Image, heat: np.ndarray) -> Image.Image:
    """The image with `heat` ([rows, cols] in [0, 1]) drawn over it in red."""
    mask = Image.fromarray((heat * 255).astype(np.uint8)).resize(image.size, Image.BILINEAR)
    red = Image.new("RGB", image.size, (255, 0, 0))
    return Image.composite(red, image, mask.point(lambda value: int(value * 0.6)))


def build_demo(model: str) -> gr.Blocks:
    demo = Demo(model)
    image = functools.partial(gr.Image, type="pil", image_mode="RGB", label="image")
    with gr.Blocks(title="vtfusion") as page:
        gr.Markdown(f"# vtfusion\n`{model}`")
        with gr.Tab("Zero-shot labels", id="zero-shot"):
            inputs = [image(elem_id="zs-image"), gr.Textbox(label="labels, comma-separated", elem_id="zs-labels")]
            output = gr.Label(elem_id="zs-output")
            gr.Button("Classify", elem_id="zs-run").click(demo.zero_shot, inputs, output)
        with gr.Tab("Search a folder", id="search"):
            inputs = [
                gr.Textbox(label="folder of images", elem_id="search-folder"),
                gr.Textbox(label="query", elem_id="search-query"),
                gr.Slider(1, 24, value=8, step=1, label="results"),
            ]
            output = gr.Gallery(label="best matches", elem_id="search-output", columns=4)
            gr.Button("Search", elem_id="search-run").click(demo.search, inputs, output)
        with gr.Tab("Caption / answer", id="caption"):
            inputs = [image(elem_id="qa-image"), gr.Textbox(label="question (empty: caption)", elem_id="qa-question")]
            output = gr.Textbox(label="answer", elem_id="qa-output")
            gr.Button("Run", elem_id="qa-run").click(demo.caption_or_answer, inputs, output)
        with gr.Tab("Entailment", id="entailment"):
            inputs = [image(elem_id="ve-image"), gr.Textbox(label="statement", elem_id="ve-statement")]
            output = gr.Label(elem_id="ve-output")
            gr.Button("Check", elem_id="ve-run").click(demo.entailment, inputs, output)
        with gr.Tab("Attention of a word", id="attention"):
            inputs = [
                image(elem_id="att-image"),
                gr.Textbox(label="text", elem_id="att-text"),
                gr.Textbox(label="word", elem_id="att-word"),
            ]
            output = gr.Image(label="where the word looked", elem_id="att-output")
            gr.Button("Draw", elem_id="att-run").click(demo.heat_map, inputs, output)
    return page


if __name__ == "__main__":
    model = os.environ.get("MODEL", "outputs/vtfusion-synthshapes")
    build_demo(model).launch(server_name="127.0.0.1", server_port=int(os.environ.get("PORT", "7860")))
