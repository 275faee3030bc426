"""A saved checkpoint is a Hub repo: it loads with trust_remote_code=True in a process that cannot import vtfusion."""

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_models import tiny_config

from modeling_vtfusion import (
    VTFusionForConditionalGeneration,
    VTFusionForImageTextRetrieval,
    VTFusionForSequenceClassification,
    VTFusionModel,
)


REPO = Path(__file__).resolve().parents[1]
CODE_FILES = {
    "configuration_vtfusion.py",
    "modeling_vtfusion.py",
    "fusion.py",
    "logits_process.py",
    "packed_linear.py",
}

# Runs in a fresh interpreter: the package and the repo are unreachable, so only the checkpoint's own code can load.
LOAD_REMOTE = textwrap.dedent(
    """
    import sys
    sys.modules["modeling_vtfusion"] = None  # `import modeling_vtfusion` now raises ImportError
    sys.modules["training"] = None
    sys.path = [p for p in sys.path if p not in ("", {repo!r})]
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor, {auto_class}

    folder = {folder!r}
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    model = {auto_class}.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    images = [Image.new("RGB", (40, 30), "red"), Image.new("L", (20, 50), 128)]
    inputs = processor(images=images, text=["a red circle", "what colour is it"], return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    torch.save({{k: v for k, v in out.items() if isinstance(v, torch.Tensor)}}, {result!r})
    """
)


def run_without_package(folder, auto_class, result, repo):
    script = LOAD_REMOTE.format(folder=str(folder), auto_class=auto_class, result=str(result), repo=str(repo))
    done = subprocess.run([sys.executable, "-c", script], cwd=folder, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(result)


def local_outputs(model, processor):
    images = [Image.new("RGB", (40, 30), "red"), Image.new("L", (20, 50), 128)]
    inputs = processor(images=images, text=["a red circle", "what colour is it"], return_tensors="pt")
    with torch.no_grad():
        out = model.eval()(**inputs)
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize(
    "head, auto_class, fusion_type",
    [
        (VTFusionModel, "AutoModel", "co_attention"),
        (VTFusionForSequenceClassification, "AutoModelForSequenceClassification", "concat"),
        (VTFusionForImageTextRetrieval, "AutoModelForNextSentencePrediction", "cross_attention"),
    ],
    ids=["base", "classification", "retrieval"],
)
def test_checkpoint_loads_as_remote_code_with_identical_outputs(
    head, auto_class, fusion_type, tiny_processor, tmp_path
):
    config = tiny_config(fusion_type=fusion_type, vocab_size=None)
    config.text_config.vocab_size = tiny_processor.tokenizer.vocab_size
    model = head(config)
    model.save_pretrained(tmp_path)
    tiny_processor.save_pretrained(tmp_path)
    expected = local_outputs(model, tiny_processor)  # retrieval: itm_logits of the given pairs are RNG-free
    remote = run_without_package(tmp_path, auto_class, tmp_path / "out.pt", repo=REPO)
    for name in ("logits_per_image", "fused_pooler_output", "logits", "itm_logits"):
        if name in expected:
            assert (remote[name] - expected[name]).abs().max() < 1e-5, name


def test_saved_folder_has_code_files_and_the_full_auto_map(tiny_processor, tmp_path):
    config = tiny_config(vocab_size=None)
    config.text_config.vocab_size = tiny_processor.tokenizer.vocab_size
    VTFusionForConditionalGeneration(config).save_pretrained(tmp_path)
    tiny_processor.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert CODE_FILES | {"processing_vtfusion.py", "image_utils.py", "model.safetensors"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_vtfusion.VTFusionModel"
    assert auto_map["AutoModelForZeroShotImageClassification"] == "modeling_vtfusion.VTFusionModel"
    assert auto_map["AutoModelForImageTextToText"] == "modeling_vtfusion.VTFusionForConditionalGeneration"
    assert auto_map["AutoModelForPreTraining"] == "modeling_vtfusion.VTFusionForPreTraining"
    assert auto_map["AutoConfig"] == "configuration_vtfusion.VTFusionConfig"


def test_code_files_import_each_other_relatively_and_never_the_training_code():
    for path in (REPO / "modeling_vtfusion").glob("*.py"):
        source = path.read_text()
        for forbidden in ("from modeling_vtfusion", "import modeling_vtfusion", "training", "benchmarks", "tests"):
            assert f"import {forbidden}" not in source and f"from {forbidden}" not in source, (path.name, forbidden)
        assert not re.search(r"(?<![\w.])(eval|exec)\(", source), path.name


NETWORK_OR_FILE_CALLS = {
    "open",
    "urlopen",
    "hf_hub_download",
    "snapshot_download",
    "get",
    "post",
    "connect",
    "read_text",
}


def module_level_calls(node: ast.AST):
    """Calls made when the module is imported: everywhere but inside function bodies (class bodies run at import)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(child, ast.Call):
            yield child
        yield from module_level_calls(child)


def test_import_time_call_finder_sees_calls_in_class_bodies_but_not_in_functions():
    tree = ast.parse("class A:\n    def f(self):\n        open('x')\n    data = open('y')\nz = len([])\n")
    names = [call.func.id for call in module_level_calls(tree)]
    assert names == ["open", "len"]


def test_code_files_do_no_io_or_network_at_import():
    for path in (REPO / "modeling_vtfusion").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {
            alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        }
        assert not imported & {"requests", "urllib", "socket", "http"}, path.name
        for call in module_level_calls(tree):
            name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
            assert name not in NETWORK_OR_FILE_CALLS, f"{path.name}:{call.lineno} calls {name}() at import time"
