"""Pipelines for the vtfusion tasks transformers has none of: image-text classification and image-text retrieval.

Every vtfusion checkpoint names them in its config (`custom_pipelines`, see `CUSTOM_PIPELINES`) and carries this file,
so on any machine:

    pipeline("image-text-classification", model=repo, trust_remote_code=True)(image, text="a red circle")
    pipeline("image-text-retrieval", model=repo, trust_remote_code=True)(gallery_images, text="a red circle")

With the package installed, importing `modeling_vtfusion` also registers both tasks with `PIPELINE_REGISTRY`.
"""

from .compat import MINIMUM_TRANSFORMERS  # noqa: F401  (first: an unsupported transformers fails here, with the fix)


# isort: split
from transformers import AutoModelForNextSentencePrediction, AutoModelForSequenceClassification
from transformers.image_utils import load_image
from transformers.pipelines import PIPELINE_REGISTRY, Pipeline


class ImageTextClassificationPipeline(Pipeline):
    """
    Image + text -> labels with scores, with a `VTFusionForSequenceClassification` checkpoint (e.g. "is this statement
    about the image true?"). Scores are a softmax over the labels, or a sigmoid per label for multi-label and
    single-logit models (as in the text-classification pipeline).

    Example:

    ```python
    >>> classifier = pipeline("image-text-classification", model=repo, trust_remote_code=True)
    >>> classifier(image, text="the red circle is left of the square")
    [{'label': 'true', 'score': 0.93}, {'label': 'false', 'score': 0.07}]
    >>> classifier([image_a, image_b], text=["a red circle", "two blue squares"], top_k=1)
    [[{'label': 'true', 'score': 0.93}], [{'label': 'false', 'score': 0.81}]]
    ```
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __call__(self, image, text=None, **kwargs):
        """
        Args:
            image: one image (PIL image, local path, URL, numpy array or tensor), a list of images (one per text), a
                `{"image": ..., "text": ...}` dict or a list of such dicts.
            text (`str` or `list[str]`): the text paired with each image.
            top_k (`int`, *optional*): how many labels to return per pair (default: all, best first).
            function_to_apply (`"softmax"`, `"sigmoid"` or `"none"`, *optional*): overrides the default scoring.

        Returns:
            A list of `{"label", "score"}` dicts, best first; a list of such lists for a batch of pairs.
        """
        return super().__call__(as_pairs(image, text), **kwargs)

    def _sanitize_parameters(self, top_k=None, function_to_apply=None, timeout=None, **kwargs):
        postprocess = {}
        if top_k is not None:
            postprocess["top_k"] = top_k
        if function_to_apply is not None:
            postprocess["function_to_apply"] = function_to_apply
        return ({"timeout": timeout} if timeout is not None else {}), {}, postprocess

    def preprocess(self, pair, timeout=None):
        image = read_image(pair["image"], timeout)
        return self.processor(images=[image], text=[pair["text"]], return_tensors="pt").to(self.dtype)

    def _forward(self, model_inputs):
        return {"logits": self.model(**model_inputs).logits}

    def postprocess(self, model_outputs, top_k=None, function_to_apply=None):
        logits = model_outputs["logits"][0].float()  # [num_labels]
        function_to_apply = function_to_apply or default_scoring(self.model.config)
        if function_to_apply == "sigmoid":
            scores = logits.sigmoid()
        elif function_to_apply == "softmax":
            scores = logits.softmax(-1)
        elif function_to_apply == "none":
            scores = logits
        else:
            raise ValueError(f"function_to_apply must be 'softmax', 'sigmoid' or 'none', got {function_to_apply!r}.")
        id2label = self.model.config.id2label
        ranked = scores.argsort(descending=True)[:top_k]
        return [{"label": id2label[int(i)], "score": scores[i].item()} for i in ranked]


class ImageTextRetrievalPipeline(Pipeline):
    """
    Ranks a gallery for a query, with a `VTFusionForImageTextRetrieval` checkpoint: images for a text, or texts for an
    image. Two stages, as ALBEF / BLIP retrieve (`VTFusionForImageTextRetrieval.rank`): the contrastive (ITC)
    similarity of the query with every gallery item shortlists `num_candidates` items, then the image-text matching
    (ITM) head reads each shortlisted pair through the fusion module and ranks them by its match probability.

    Example:

    ```python
    >>> retriever = pipeline("image-text-retrieval", model=repo, trust_remote_code=True)
    >>> retriever(images=[red_scene, blue_scene, green_scene], text="a red circle", top_k=2)
    [{'score': 0.97, 'itc_score': 0.61, 'index': 0, 'image': <PIL.Image...>}, {'score': 0.12, ...}]
    >>> retriever(images=red_scene, text=["a red circle", "a blue star"])
    [{'score': 0.97, 'itc_score': 0.61, 'index': 0, 'text': 'a red circle'}, {'score': 0.03, ...}]
    ```
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __call__(self, images, text=None, **kwargs):
        """
        Args:
            images: the gallery (a list of images) when `text` is one string, or the query (one image) when `text`
                is a list of candidate texts. Images may be PIL images, local paths, URLs, numpy arrays or tensors.
            text (`str` or `list[str]`): the query text, or the gallery of texts.
            num_candidates (`int`, *optional*, defaults to 16): how many ITC best items the ITM head re-ranks.
            top_k (`int`, *optional*): how many items to return (default: every re-ranked item).

        Returns:
            A list of dicts, best first: `score` (ITM match probability), `itc_score` (the contrastive similarity:
            cosine times the learned temperature), `index` (position in the gallery) and the gallery item itself
            (`image` or `text`).
        """
        if isinstance(text, str) and isinstance(images, (list, tuple)):
            query = {"text": text, "images": list(images)}
        elif isinstance(text, (list, tuple)) and not isinstance(images, (list, tuple)):
            query = {"image": images, "texts": list(text)}
        else:
            raise ValueError(
                "Pass a list of images and one text (rank the images for the text), or one image and a list of texts "
                "(rank the texts for the image)."
            )
        return super().__call__(query, **kwargs)

    def _sanitize_parameters(self, num_candidates=None, top_k=None, timeout=None, **kwargs):
        preprocess = {"timeout": timeout} if timeout is not None else {}
        forward = {"num_candidates": num_candidates} if num_candidates is not None else {}
        return preprocess, forward, ({"top_k": top_k} if top_k is not None else {})

    def preprocess(self, query, timeout=None):
        text_query = "text" in query
        images = query["images"] if text_query else [query["image"]]
        texts = [query["text"]] if text_query else query["texts"]
        inputs = self.processor(
            images=[read_image(image, timeout) for image in images], text=texts, return_tensors="pt"
        )
        inputs = inputs.to(self.dtype)
        inputs["gallery"] = query["images"] if text_query else query["texts"]
        inputs["gallery_kind"] = "image" if text_query else "text"
        return inputs

    def _forward(self, model_inputs, num_candidates=16):
        gallery, kind = model_inputs.pop("gallery"), model_inputs.pop("gallery_kind")
        images = self.model.retrieval_features(pixel_values=model_inputs.pop("pixel_values"))
        texts = self.model.retrieval_features(**model_inputs)
        queries, candidates = (texts, images) if kind == "image" else (images, texts)
        ranking = self.model.rank(queries, candidates, top_k=num_candidates)  # one query: row 0
        itc_scores = dict(zip(ranking.itc_indices[0].tolist(), ranking.itc_scores[0].tolist()))
        return {
            "indices": ranking.indices[0].tolist(),
            "scores": ranking.scores[0].exp().tolist(),  # ITM log-probabilities -> probabilities
            "itc_scores": [itc_scores[index] for index in ranking.indices[0].tolist()],
            "gallery": gallery,
            "gallery_kind": kind,
        }

    def postprocess(self, model_outputs, top_k=None):
        gallery, kind = model_outputs["gallery"], model_outputs["gallery_kind"]
        ranked = zip(model_outputs["indices"], model_outputs["scores"], model_outputs["itc_scores"])
        results = [
            {"score": score, "itc_score": itc, "index": index, kind: gallery[index]} for index, score, itc in ranked
        ]
        return results[:top_k]


def as_pairs(image, text):
    """(image, text), lists of both, a {"image", "text"} dict or a list of them -> one dict or a list of dicts."""
    if isinstance(image, dict):
        return image
    if isinstance(image, (list, tuple)) and image and isinstance(image[0], dict):
        return list(image)
    if isinstance(image, (list, tuple)):
        if not isinstance(text, (list, tuple)) or len(text) != len(image):
            raise ValueError(f"Got {len(image)} images: pass as many texts, one per image.")
        return [{"image": i, "text": t} for i, t in zip(image, text)]
    if not isinstance(text, str):
        raise ValueError("Pass one text (a string) with one image.")
    return {"image": image, "text": text}


def read_image(image, timeout=None):
    """Paths, URLs and base64 strings -> PIL images; other kinds go to the processor as they are."""
    return load_image(image, timeout=timeout) if isinstance(image, str) else image


def default_scoring(config) -> str:
    if config.problem_type == "multi_label_classification" or config.num_labels == 1:
        return "sigmoid"
    return "softmax"


def pipeline_entry(pipeline_class, auto_class) -> dict:
    """A task's entry in a config's `custom_pipelines`, as `Pipeline.save_pretrained` writes it."""
    module = pipeline_class.__module__.split(".")[-1]  # "pipelines", also when loaded as remote code
    return {"impl": f"{module}.{pipeline_class.__name__}", "pt": [auto_class.__name__], "type": "multimodal"}


PIPELINES = {
    "image-text-classification": (ImageTextClassificationPipeline, AutoModelForSequenceClassification),
    # transformers has no retrieval Auto class; image-text matching is next-sentence prediction's image-text twin.
    "image-text-retrieval": (ImageTextRetrievalPipeline, AutoModelForNextSentencePrediction),
}
# Written into every vtfusion checkpoint's config, so `pipeline(task, model=repo, trust_remote_code=True)` finds them.
CUSTOM_PIPELINES = {task: pipeline_entry(*classes) for task, classes in PIPELINES.items()}


def register_pipelines() -> None:
    """Register both tasks with transformers' `PIPELINE_REGISTRY` (done on `import modeling_vtfusion`)."""
    for task, (pipeline_class, auto_class) in PIPELINES.items():
        if PIPELINE_REGISTRY.supported_tasks.get(task, {}).get("impl") is not pipeline_class:
            PIPELINE_REGISTRY.register_pipeline(
                task, pipeline_class=pipeline_class, pt_model=auto_class, type="multimodal"
            )


__all__ = ["CUSTOM_PIPELINES", "ImageTextClassificationPipeline", "ImageTextRetrievalPipeline", "register_pipelines"]
