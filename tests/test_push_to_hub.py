"""push_to_hub with no network: a fake Hub stands in at huggingface_hub's API boundary (create_repo, create_commit,
the README metadata check before an upload and the README download that `push_to_hub` makes to keep an existing
card), so the tests see every uploaded file's exact bytes, then load the uploaded repo with remote code in a process
that cannot import the package.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, ModelCard, RepoUrl
from huggingface_hub.errors import EntryNotFoundError
from PIL import Image
from tiny_models import TINY_MODEL_ARGS, TINY_TEXT, tiny_config

from modeling_vtfusion import VTFusionForConditionalGeneration
from modeling_vtfusion.modeling_vtfusion import AUTO_MAP
from modeling_vtfusion.pipelines import CUSTOM_PIPELINES
from training.model_card import write_model_card


REPO = Path(__file__).resolve().parents[1]
# Every file of the package travels as remote code, except the package marker and the helpers no model imports
# (heat maps with matplotlib, the FAISS gallery index, int8 / ONNX inference).
CODE_FILES = {p.name for p in (REPO / "modeling_vtfusion").glob("*.py")} - {
    "__init__.py",
    "interpretability.py",
    "retrieval_index.py",
    "cpu_inference.py",
}
PROCESSOR_FILES = {"processor_config.json", "tokenizer.json", "tokenizer_config.json"}


class FakeHub:
    """Repositories as folders: each commit's added files are written under `root/<repo_id>/`."""

    def __init__(self, root: Path):
        self.root = root
        self.commits = []  # (repo_id, commit message, paths in repo)
        self.validated = []  # README contents checked before an upload

    def repo(self, repo_id: str) -> Path:
        return self.root / repo_id

    def create_repo(self, repo_id, *, exist_ok=False, **kwargs):
        if self.repo(repo_id).exists() and not exist_ok:
            raise FileExistsError(repo_id)
        self.repo(repo_id).mkdir(parents=True, exist_ok=True)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(self, repo_id, operations, *, commit_message, **kwargs):
        if not self.repo(repo_id).is_dir():
            raise FileNotFoundError(f"{repo_id} was never created")
        paths = []
        for operation in operations:
            assert isinstance(operation, CommitOperationAdd), operation
            target = self.repo(repo_id) / operation.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            with operation.as_file() as source:
                target.write_bytes(source.read())
            paths.append(operation.path_in_repo)
        self.commits.append((repo_id, commit_message, sorted(paths)))
        url = f"https://huggingface.co/{repo_id}/commit/{len(self.commits):040d}"
        return CommitInfo(commit_url=url, commit_message=commit_message, commit_description="", oid="0" * 40)

    def validate_yaml(self, content, **kwargs):
        """The Hub checks a README's metadata before an upload; here, it must parse as a model card's."""
        ModelCard(content, ignore_metadata_errors=False)
        self.validated.append(content)

    def hf_hub_download(self, repo_id, filename, **kwargs):
        path = self.repo(repo_id) / filename
        if not path.is_file():
            raise EntryNotFoundError(f"{filename} is not in {repo_id}")
        return str(path)

    def files(self, repo_id: str) -> dict[str, bytes]:
        folder = self.repo(repo_id)
        return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    fake = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(HfApi, "create_repo", staticmethod(fake.create_repo))
    monkeypatch.setattr(HfApi, "create_commit", staticmethod(fake.create_commit))
    monkeypatch.setattr(HfApi, "_validate_yaml", staticmethod(fake.validate_yaml))
    monkeypatch.setattr(huggingface_hub.repocard, "hf_hub_download", fake.hf_hub_download)
    monkeypatch.setattr(huggingface_hub.hf_api, "is_xet_available", lambda: False)  # upload_folder: one commit
    return fake


@pytest.fixture
def model_and_processor(tiny_processor):
    torch.manual_seed(0)
    text_config = dict(TINY_TEXT, vocab_size=tiny_processor.tokenizer.vocab_size)
    return VTFusionForConditionalGeneration(tiny_config(text_config=text_config)).eval(), tiny_processor


def saved_files(model, processor, folder: Path) -> dict[str, bytes]:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_model_and_processor_push_uploads_exactly_what_save_pretrained_writes(hub, model_and_processor, tmp_path):
    model, processor = model_and_processor
    model.push_to_hub("me/tiny-vtfusion")
    processor.push_to_hub("me/tiny-vtfusion")
    uploaded = hub.files("me/tiny-vtfusion")
    expected = saved_files(model, processor, tmp_path / "saved")
    assert set(uploaded) == set(expected) | {"README.md"}
    for name, content in expected.items():
        assert uploaded[name] == content, name
    assert len(hub.commits) == 2  # one per push_to_hub


def test_pushed_repo_holds_safetensors_weights_config_code_and_processor(hub, model_and_processor):
    model, processor = model_and_processor
    model.push_to_hub("me/tiny-vtfusion")
    processor.push_to_hub("me/tiny-vtfusion")
    uploaded = hub.files("me/tiny-vtfusion")
    assert CODE_FILES | PROCESSOR_FILES | {"model.safetensors", "config.json", "generation_config.json"} <= set(
        uploaded
    )
    assert not [name for name in uploaded if name.endswith((".bin", ".pt", ".pth", ".pkl"))]
    config = json.loads(uploaded["config.json"])
    assert config["auto_map"] == AUTO_MAP
    assert config["custom_pipelines"] == CUSTOM_PIPELINES
    for name in CODE_FILES:
        assert uploaded[name] == (REPO / "modeling_vtfusion" / name).read_bytes(), name


def test_pushing_a_model_keeps_the_vtfusion_card_already_on_the_hub(hub, model_and_processor, tmp_path):
    model, _ = model_and_processor
    card = write_model_card(tmp_path, {"test_cider": 0.5}, model.config, model_id="me/tiny-vtfusion")
    HfApi().create_repo("me/tiny-vtfusion")
    HfApi().upload_file(path_or_fileobj=tmp_path / "README.md", path_in_repo="README.md", repo_id="me/tiny-vtfusion")
    model.push_to_hub("me/tiny-vtfusion", tags=["synthshapes"])
    pushed = ModelCard(hub.files("me/tiny-vtfusion")["README.md"].decode())
    assert pushed.text == card.text
    assert pushed.data.eval_results[0].metric_value == 0.5
    assert set(card.data.tags) | {"synthshapes"} == set(pushed.data.tags)


def test_a_run_folder_with_its_card_uploads_in_one_commit(hub, model_and_processor, tmp_path):
    model, processor = model_and_processor
    folder = tmp_path / "run"
    expected = saved_files(model, processor, folder)
    write_model_card(folder, {}, model.config, model_id="me/tiny-vtfusion")
    HfApi().create_repo("me/tiny-vtfusion")
    HfApi().upload_folder(repo_id="me/tiny-vtfusion", folder_path=folder)
    uploaded = hub.files("me/tiny-vtfusion")
    assert set(uploaded) == set(expected) | {"README.md"}
    card = ModelCard(uploaded["README.md"].decode())
    assert card.data.library_name == "transformers" and "vtfusion" in card.data.tags
    assert "image-text-classification" in card.text  # our card's pipeline section, not Trainer's generic card
    assert hub.validated == [uploaded["README.md"].decode()]
    assert len(hub.commits) == 1


LOAD_UPLOADED = textwrap.dedent(
    """
    import sys
    sys.modules["modeling_vtfusion"] = None  # the package is unreachable: only the repo's own code can load
    sys.modules["training"] = None
    import json
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

    folder = sys.argv[1]
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    inputs = processor(images=[Image.new("RGB", (32, 32), "red")], text=[""], return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    classifier = pipeline("image-text-classification", model=folder, trust_remote_code=True)
    scores = classifier(Image.new("RGB", (32, 32), "red"), text="a red circle")
    print(json.dumps({"module": type(model).__module__, "ids": ids.tolist(), "labels": len(scores)}))
    """
)


def test_uploaded_repo_loads_with_remote_code_and_generates_the_same_ids(hub, model_and_processor):
    model, processor = model_and_processor
    model.push_to_hub("me/tiny-vtfusion")
    processor.push_to_hub("me/tiny-vtfusion")
    inputs = processor(images=[Image.new("RGB", (32, 32), "red")], text=[""], return_tensors="pt")
    expected = model.generate(**inputs, max_new_tokens=3, do_sample=False).tolist()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-c", LOAD_UPLOADED, str(hub.repo("me/tiny-vtfusion"))]
    done = subprocess.run(command, cwd=hub.root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["module"].startswith("transformers_modules.")
    assert loaded["ids"] == expected
    assert loaded["labels"] == model.config.num_labels


def test_training_entry_point_push_uploads_its_output_folder(hub, tmp_path):
    from training.train import main

    output_dir = tmp_path / "run"
    main(
        [
            "--task=classification",
            f"--output_dir={output_dir}",
            "--do_train",
            "--max_steps=2",
            "--per_device_train_batch_size=4",
            f"--synthshapes_dir={tmp_path / 'synthshapes'}",
            "--synthshapes_num_scenes=20",
            *TINY_MODEL_ARGS,
            "--save_strategy=no",
            "--report_to=none",
            "--use_cpu",
            "--push_to_hub",
            "--hub_model_id=me/tiny-run",
        ]
    )
    uploaded = hub.files("me/tiny-run")
    assert CODE_FILES | PROCESSOR_FILES | {"model.safetensors", "config.json", "README.md"} <= set(uploaded)
    assert not [name for name in uploaded if name.endswith((".pt", ".pth", ".pkl")) or name == "pytorch_model.bin"]
    for name in CODE_FILES | PROCESSOR_FILES | {"model.safetensors", "config.json"}:
        assert uploaded[name] == (output_dir / name).read_bytes(), name
    config = json.loads(uploaded["config.json"])
    assert config["auto_map"] == AUTO_MAP and config["custom_pipelines"] == CUSTOM_PIPELINES
    card = ModelCard(uploaded["README.md"].decode())
    assert card.data.library_name == "transformers" and "vtfusion" in card.data.tags
    assert "image-text-classification" in card.text  # our card's pipeline section, not Trainer's generic card
