"""One training step (forward, backward, AdamW step) per objective, for vtfusion and for its peer.

Each `*_loss(model, batch)` is the objective as its library computes it; `TrainStep` wraps one into a full step.
BLIP's ITM peer follows BLIP's own training code: the images are encoded once and the image tokens of the 3B pairs
(positives, image + negative text, negative image + text) are gathered from them; transformers' BLIP has no loss for
it (transformers #21231), so the cross-entropy over its `itm_head` is written here.
"""

import torch
import torch.nn.functional as F

from .models import BLIP_BOS_ID


def vtfusion_itc_loss(model, batch):
    return model(**batch, return_loss=True).loss


def clip_itc_loss(model, batch):
    return model(**batch, return_loss=True).loss


def vtfusion_itm_loss(model, batch):
    return model(**batch).loss  # ITC + ITM with one hard negative text per image and one image per text


def blip_itm_loss(model, batch):
    image_tokens = model.vision_model(pixel_values=batch["pixel_values"]).last_hidden_state  # [B, Ni, H]
    ids, mask = batch["input_ids"], batch["attention_mask"]
    size = ids.shape[0]
    negatives = (torch.arange(size) + torch.randint(1, size, (size,))) % size  # never the positive
    images = torch.cat([image_tokens, image_tokens, image_tokens[negatives]])  # [3B, Ni, H]
    hidden = model.text_encoder(
        input_ids=torch.cat([ids, ids[negatives], ids]),
        attention_mask=torch.cat([mask, mask[negatives], mask]),
        encoder_hidden_states=images,
        encoder_attention_mask=torch.ones(images.shape[:2], dtype=torch.long),
    ).last_hidden_state
    logits = model.itm_head(hidden[:, 0])  # [3B, 2]
    labels = torch.cat([torch.ones(size), torch.zeros(2 * size)]).long()
    return F.cross_entropy(logits, labels)


def caption_labels(batch):
    """Decoder targets: the caption without [CLS], padding ignored."""
    return batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, -100)


def vtfusion_caption_loss(model, batch):
    return model(pixel_values=batch["pixel_values"], labels=caption_labels(batch)).loss


def blip_caption_loss(model, batch):
    ids = batch["input_ids"].clone()
    ids[:, 0] = BLIP_BOS_ID
    labels = ids.masked_fill(batch["attention_mask"] == 0, -100)
    return model(
        pixel_values=batch["pixel_values"], input_ids=ids, attention_mask=batch["attention_mask"], labels=labels
    ).loss


def vtfusion_pretraining_loss(model, batch):
    return model(**batch).loss  # ITC + ITM (hard negatives) + LM, the image encoded once


class TrainStep:
    """A full training step of `model` on `batch`: zero grads, loss, backward, AdamW step. `model` may be compiled.

    AdamW is the fused kernel, as `Trainer` uses by default (the per-parameter loop would add ~20% to a step here).
    """

    def __init__(self, model, loss_fn, batch, optimizer_model=None):
        self.model, self.loss_fn, self.batch = model, loss_fn, batch
        params = [p for p in (optimizer_model or model).parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)

    def __call__(self):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model, self.batch)
        loss.backward()
        self.optimizer.step()
        return loss

    def forward_backward(self):
        """The step without the optimizer: what FLOP counting and profiling look at."""
        self.optimizer.zero_grad(set_to_none=True)
        self.loss_fn(self.model, self.batch).backward()


def caption_generator(model, pixel_values, max_new_tokens, num_beams, use_cache=True):
    """A call that generates exactly `max_new_tokens` tokens for every image (no early stop), greedy or beam."""

    def generate():
        with torch.inference_mode():
            return model.generate(
                pixel_values=pixel_values,
                max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens,
                num_beams=num_beams,
                do_sample=False,
                use_cache=use_cache,
            )

    return generate


# objective -> (model, loss) of vtfusion and of its peer, by `models.BUILDERS` name
OBJECTIVES = {
    "itc": {"vtfusion": ("vtfusion_model", vtfusion_itc_loss), "peer": ("clip", clip_itc_loss)},
    "itm": {"vtfusion": ("vtfusion_retrieval", vtfusion_itm_loss), "peer": ("blip_retrieval", blip_itm_loss)},
    "caption": {
        "vtfusion": ("vtfusion_captioning", vtfusion_caption_loss),
        "peer": ("blip_captioning", blip_caption_loss),
    },
    "pretraining": {"vtfusion": ("vtfusion_pretraining", vtfusion_pretraining_loss)},
}
