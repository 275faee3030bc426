"""Every head of saved vtfusion checkpoints, loaded through its `Auto*` class and run: forward, `generate()` (greedy
and beam search, with and without the cache), the processor, and every pipeline.

The same function runs in the test process (the package importable: the reference) and as a script in a virtual
environment that holds another transformers release and no vtfusion, where only the checkpoints' own code can serve:

    python remote_checks.py CHECKPOINTS_DIR IMAGE_DIR OUT_DIR

It writes `OUT_DIR/tensors.safetensors` (every output tensor) and `OUT_DIR/report.json` (the transformers version,
the classes that served, the decoder's input lengths at each generation step, and the pipelines' results). Imports
nothing from the package, training/ or the other test files but `pipeline_runs`.
"""

import json
import sys
from pathlib import Path


# checkpoint folder -> the Auto class that loads it
HEADS = {
    "base": "AutoModel",
    "classification": "AutoModelForSequenceClassification",
    "retrieval": "AutoModelForNextSentencePrediction",
    "pretraining": "AutoModelForPreTraining",
    "generation": "AutoModelForImageTextToText",
}
# Outputs that depend only on the weights and the inputs (pre-training's ITM draws its hard negatives at random).
FORWARD_FIELDS = {
    "base": ("logits_per_image", "image_embeds", "text_embeds", "fused_pooler_output"),
    "classification": ("logits",),
    "retrieval": ("itm_logits", "logits_per_image"),
    "pretraining": ("itc_loss", "lm_loss", "logits_per_image", "lm_logits"),
    "generation": ("loss", "logits"),
}
NEW_TOKENS = 5
GENERATION_RUNS = {
    "greedy": {"use_cache": True},
    "greedy_no_cache": {"use_cache": False},
    "beam_3": {"num_beams": 3, "use_cache": True},
    "beam_3_no_cache": {"num_beams": 3, "use_cache": False},
}
TEXTS = ["what colour is the shape", "a red circle"]
PIPELINES_FOLDER = "pipelines"  # a checkpoint with trained weights of every head, for `pipeline_runs`


def check_images():
    from PIL import Image

    return [Image.new("RGB", (40, 30), (220, 30, 30)), Image.new("L", (20, 50), 128)]


def run_checks(checkpoints: str, image_dir: str, trust_remote_code: bool | None = None) -> tuple[dict, dict]:
    """(tensors by name, report) for the checkpoints under `checkpoints` (one folder per entry of `HEADS`).

    `trust_remote_code=None` with the package imported: the package's classes serve; `True`: the checkpoints' code.
    """
    import torch
    import transformers
    from pipeline_runs import run_pipelines

    torch.manual_seed(0)
    processor = transformers.AutoProcessor.from_pretrained(
        Path(checkpoints, "base"), trust_remote_code=trust_remote_code
    )
    inputs = processor(images=check_images(), text=TEXTS, return_tensors="pt")
    tensors = {f"processor/{name}": value for name, value in inputs.items()}
    report = {"transformers": transformers.__version__, "classes": {}, "decoder_input_lengths": {}}
    models = {
        head: getattr(transformers, auto_class).from_pretrained(
            Path(checkpoints, head), trust_remote_code=trust_remote_code
        )
        for head, auto_class in HEADS.items()
    }
    for head, model in models.items():
        model.eval()
        report["classes"][head] = f"{type(model).__module__}.{type(model).__name__}"
        kwargs = {"labels": inputs["input_ids"][:, 1:]} if head == "generation" else {}
        kwargs |= {"return_loss": False} if head == "retrieval" else {}
        with torch.no_grad():
            outputs = model(**inputs, **kwargs)
        tensors |= {f"{head}/{name}": outputs[name] for name in FORWARD_FIELDS[head]}
    for name, run_kwargs in GENERATION_RUNS.items():
        sequences, lengths = generate_recording_decoder_inputs(models["generation"], inputs, **run_kwargs)
        tensors[f"generate/{name}"] = sequences
        report["decoder_input_lengths"][name] = lengths
    report["pipelines"] = run_pipelines(str(Path(checkpoints, PIPELINES_FOLDER)), image_dir, trust_remote_code)
    return tensors, report


def generate_recording_decoder_inputs(model, inputs, **kwargs):
    """`generate()` from a two-token decoder prefix; also returns the decoder's input length at every step (with a
    working cache: the prefix, then one token a step; without: the whole sequence every step)."""
    import torch

    lengths = []
    hook = model.text_decoder.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    start = model.config.decoder_start_token_id
    prefix = torch.tensor([[start, inputs["input_ids"][0, 1]]] * len(inputs["input_ids"]))
    try:
        sequences = model.generate(
            **inputs, decoder_input_ids=prefix, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, **kwargs
        )
    finally:
        hook.remove()
    return sequences, lengths


if __name__ == "__main__":
    sys.modules["modeling_vtfusion"] = None  # the package is unreachable: `import modeling_vtfusion` raises
    sys.modules["training"] = None
    checkpoints, image_dir, out = sys.argv[1:4]
    from safetensors.torch import save_file

    tensors, report = run_checks(checkpoints, image_dir, trust_remote_code=True)
    save_file({name: value.contiguous() for name, value in tensors.items()}, str(Path(out, "tensors.safetensors")))
    Path(out, "report.json").write_text(json.dumps(report))
