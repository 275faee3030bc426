"""vtfusion: vision-text fusion models for Hugging Face Transformers.

Importing the package registers the config, models and processor with the `Auto*` classes, and marks them for
`register_for_auto_class` so that `save_pretrained` writes the code files and the `auto_map` of a Hub repo.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForNextSentencePrediction,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)

from .configuration_vtfusion import FUSION_TYPES, VTFusionConfig, special_token_ids
from .modeling_vtfusion import (
    VTFusionForConditionalGeneration,
    VTFusionForImageTextRetrieval,
    VTFusionForPreTraining,
    VTFusionForSequenceClassification,
    VTFusionModel,
    VTFusionPreTrainedModel,
)
from .pipelines import ImageTextClassificationPipeline, ImageTextRetrievalPipeline, register_pipelines
from .processing_vtfusion import VTFusionProcessor


AutoConfig.register("vtfusion", VTFusionConfig, exist_ok=True)
AutoModel.register(VTFusionConfig, VTFusionModel, exist_ok=True)
AutoModelForZeroShotImageClassification.register(VTFusionConfig, VTFusionModel, exist_ok=True)
AutoModelForImageTextToText.register(VTFusionConfig, VTFusionForConditionalGeneration, exist_ok=True)
AutoModelForNextSentencePrediction.register(VTFusionConfig, VTFusionForImageTextRetrieval, exist_ok=True)
AutoModelForPreTraining.register(VTFusionConfig, VTFusionForPreTraining, exist_ok=True)
AutoModelForSequenceClassification.register(VTFusionConfig, VTFusionForSequenceClassification, exist_ok=True)
AutoProcessor.register(VTFusionConfig, VTFusionProcessor, exist_ok=True)

VTFusionConfig.register_for_auto_class()
VTFusionProcessor.register_for_auto_class("AutoProcessor")
VTFusionModel.register_for_auto_class("AutoModel")
VTFusionForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
VTFusionForPreTraining.register_for_auto_class("AutoModelForPreTraining")
VTFusionForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
# transformers has no retrieval Auto class; image-text matching is next-sentence prediction's image-text twin.
VTFusionForImageTextRetrieval.register_for_auto_class("AutoModelForNextSentencePrediction")
register_pipelines()  # image-text-classification and image-text-retrieval

__all__ = [
    "FUSION_TYPES",
    "ImageTextClassificationPipeline",
    "ImageTextRetrievalPipeline",
    "VTFusionConfig",
    "VTFusionForConditionalGeneration",
    "VTFusionForImageTextRetrieval",
    "VTFusionForPreTraining",
    "VTFusionForSequenceClassification",
    "VTFusionModel",
    "VTFusionPreTrainedModel",
    "VTFusionProcessor",
    "special_token_ids",
]
