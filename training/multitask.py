"""All vtfusion heads on one shared base, trained together: what the main job fine-tunes.

`VTFusionForMultitask` holds exactly the modules of the library's heads under their names (`vtfusion`, `itm_head`,
`mlm_head`, `text_decoder`, `lm_head`, `classifier`), so its checkpoint is the union of theirs: every head class, and every
`Auto*` class of the checkpoint's `auto_map`, loads its own part out of the one folder. One forward encodes each
image once and spends it on every objective:
- ITC + ITM with hard negatives, captioning LM and MLM on the image's caption (`VTFusionForPreTraining`'s objectives;
  with `itm_loss_weight=0` ITM is skipped, and the captions skip the fusion module);
- VQA: the decoder answers questions fused with their image (`VTFusionForConditionalGeneration` with `input_ids`);
- entailment: the classifier reads the fused (image, statement) pair (`VTFusionForSequenceClassification`).
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import ModelOutput

from modeling_vtfusion import VTFusionConfig, VTFusionModel, VTFusionPreTrainedModel
from modeling_vtfusion.modeling_vtfusion import (
    ImageTextMatchingMixin,
    MaskedLanguageModelingMixin,
    VTFusionTextDecoder,
    caption_labels,
    caption_loss,
    classification_loss,
    shift_tokens_right,
)


# Head classes whose weights a multitask checkpoint holds in full (written to the config's `architectures`).
HEAD_CLASSES = [
    "VTFusionForPreTraining",
    "VTFusionForConditionalGeneration",
    "VTFusionForSequenceClassification",
    "VTFusionForImageTextRetrieval",
    "VTFusionModel",
]


@dataclass
class VTFusionMultitaskOutput(ModelOutput):
    """loss = the weighted pre-training losses + lm_loss_weight * vqa_loss + entailment_loss; each reported."""

    loss: torch.Tensor | None = None
    itc_loss: torch.Tensor | None = None
    itm_loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    vqa_loss: torch.Tensor | None = None
    entailment_loss: torch.Tensor | None = None
    entailment_logits: torch.Tensor | None = None


class VTFusionForMultitask(ImageTextMatchingMixin, MaskedLanguageModelingMixin, VTFusionPreTrainedModel):
    _tied_weights_keys = {"lm_head.weight": "text_decoder.embed_tokens.weight"}
    accepts_loss_kwargs = False

    def __init__(self, config: VTFusionConfig, vision_model=None, text_model=None):
        super().__init__(config)
        self.vtfusion = VTFusionModel(config, vision_model, text_model)
        self.itm_head = nn.Linear(config.fusion_hidden_size, 2)
        self.text_decoder = VTFusionTextDecoder(config)
        self.lm_head = nn.Linear(config.decoder_hidden_size, config.vocab_size, bias=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.fusion_hidden_size, config.num_labels)
        # registered last, so the other modules draw the same initial weights as in a head without it
        self.mlm_head = nn.Linear(config.fusion_hidden_size, config.vocab_size)
        # a training choice, not a property of the checkpoint: `--multitask_itm false` skips ITM (its three fused
        # captions per image cost ~40% of a step) and leaves the pre-trained ITM head as it is
        self.skip_itm = False
        self.post_init()

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        question_input_ids: torch.LongTensor,
        question_attention_mask: torch.Tensor,
        question_image_index: torch.LongTensor,
        answer_labels: torch.LongTensor,
        statement_input_ids: torch.LongTensor,
        statement_attention_mask: torch.Tensor,
        entailment_labels: torch.LongTensor,
        statement_image_index: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        mlm_input_ids: torch.LongTensor | None = None,
        mlm_labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> VTFusionMultitaskOutput:
        r"""
        B images with their captions (`input_ids`), S statements (`statement_*` [S, T], image of each
        `statement_image_index` [S], default one per image; labels `entailment_labels` [S]) and Q questions
        (`question_*` [Q, T], image of each `question_image_index` [Q], answers `answer_labels` [Q, A]).
        labels (`[B, T]`, optional): caption LM targets; by default the caption without its [CLS].
        mlm_input_ids / mlm_labels (`[B, T]`, optional): masked captions and their masked words (adds the MLM loss).
        """
        model, config = self.vtfusion, self.config
        image_tokens, image_pooled, _ = model.encode_image(pixel_values)  # [B, Ni, Hv], [B, Hv]

        text_tokens, text_pooled, _ = model.encode_text(input_ids, attention_mask)
        with_itm = False if self.skip_itm else None  # None: as itm_loss_weight says; without ITM, no fused captions
        itc_loss, itm_loss, _, _ = self._itc_and_itm(
            image_tokens, image_pooled, text_tokens, text_pooled, input_ids, attention_mask, with_itm=with_itm
        )
        if labels is None:
            labels = caption_labels(input_ids, attention_mask)
        lm_loss = self._decoder_loss(model.image_to_fusion(image_tokens), None, labels)

        question_tokens, _, _ = model.encode_text(question_input_ids, question_attention_mask)
        fused = model.fuse(image_tokens, question_tokens, question_attention_mask, image_index=question_image_index)
        vqa_loss = self._decoder_loss(fused.last_hidden_state, fused.attention_mask, answer_labels)

        statement_tokens, _, _ = model.encode_text(statement_input_ids, statement_attention_mask)
        fused = model.fuse(image_tokens, statement_tokens, statement_attention_mask, image_index=statement_image_index)
        entailment_logits = self.classifier(self.dropout(fused.pooler_output))  # [S, num_labels]
        entailment_loss = classification_loss(entailment_logits.float(), entailment_labels, self.config)

        loss = (
            config.itc_loss_weight * itc_loss
            + config.itm_loss_weight * itm_loss
            + config.lm_loss_weight * (lm_loss + vqa_loss)
            + entailment_loss
        )
        mlm_loss = None
        if mlm_labels is not None:
            mlm_loss = self._mlm_loss(image_tokens, mlm_input_ids, attention_mask, mlm_labels)
            loss = loss + config.mlm_loss_weight * mlm_loss
        return VTFusionMultitaskOutput(
            loss=loss,
            itc_loss=itc_loss,
            itm_loss=itm_loss,
            lm_loss=lm_loss,
            mlm_loss=mlm_loss,
            vqa_loss=vqa_loss,
            entailment_loss=entailment_loss,
            entailment_logits=entailment_logits,
        )

    def _decoder_loss(self, memory, memory_mask, labels) -> torch.Tensor:
        """Next-token cross-entropy of the decoder reading `memory` [N, M, H], as VTFusionForConditionalGeneration."""
        decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)
        hidden = self.text_decoder(decoder_input_ids, memory, memory_mask, return_dict=True).last_hidden_state
        logits = self.lm_head(hidden)
        return caption_loss(logits, labels)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the library's code files (this class is not remote code: each head
        class loads its part of the weights) and the head classes in `architectures`."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            custom_object_save(self.vtfusion, save_directory)  # modeling_vtfusion.py and the files it imports
            self.config.architectures = list(HEAD_CLASSES)
            self.config.save_pretrained(save_directory)
