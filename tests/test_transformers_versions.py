"""A checkpoint's code runs under the transformers its user has: the oldest release vtfusion supports and the newest.

Checkpoints of every head are saved here with the package; then, in virtual environments that hold torch, pillow and
one transformers release but no vtfusion (`MINIMUM_TRANSFORMERS`, and the newest release on the package index at run
time), `remote_checks.py` loads each as remote code and runs forward, `generate()` with and without the cache, the
processor and every pipeline. Everything must match what the package itself gives here.

The environments are kept in `.venv-compat/` and refreshed on each run (the newest one upgrades when a release
appears). `make compat` runs this file alone; `VTFUSION_EXTRA_TRANSFORMERS=5.22.2,5.23.0 make compat` adds releases.
"""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import tomllib
import torch
from colour_checkpoint import colour_config, colour_processor, save_trained_colour_checkpoint
from packaging.requirements import Requirement
from packaging.version import Version
from remote_checks import GENERATION_RUNS, HEADS, NEW_TOKENS, PIPELINES_FOLDER, run_checks
from safetensors.torch import load_file

from modeling_vtfusion import (
    VTFusionForConditionalGeneration,
    VTFusionForImageTextRetrieval,
    VTFusionForPreTraining,
    VTFusionForSequenceClassification,
    VTFusionModel,
)
from modeling_vtfusion.compat import MINIMUM_TRANSFORMERS


TESTS = Path(__file__).resolve().parent
VENVS = TESTS.parent / ".venv-compat"
RELEASES = {"minimum": f"transformers=={MINIMUM_TRANSFORMERS}", "newest": "transformers"}
# More releases to check on demand, e.g. VTFUSION_EXTRA_TRANSFORMERS=5.22.2,5.23.0 make compat
RELEASES |= {v: f"transformers=={v}" for v in os.environ.get("VTFUSION_EXTRA_TRANSFORMERS", "").split(",") if v}
BELOW_MINIMUM = "4.57.6"  # the last 4.x release, which many users still have
LOAD_EVERY_WAY = """
import sys, transformers
folder = sys.argv[1]
for loader in ("AutoConfig", "AutoProcessor", "AutoModelForImageTextToText"):
    try:
        getattr(transformers, loader).from_pretrained(folder, trust_remote_code=True)
    except ImportError as error:
        print(loader, "ImportError:", error)
    else:
        print(loader, "loaded")
"""
HEAD_CLASSES = {
    "base": VTFusionModel,
    "classification": VTFusionForSequenceClassification,
    "retrieval": VTFusionForImageTextRetrieval,
    "pretraining": VTFusionForPreTraining,
    "generation": VTFusionForConditionalGeneration,
}
assert HEAD_CLASSES.keys() == HEADS.keys()


def prepare_venv(name: str, requirement: str) -> Path:
    """A venv with this interpreter's torch, pillow and `requirement` (upgraded to the newest release it allows)."""
    folder = VENVS / name
    python = folder / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
    torch_release = f"torch=={torch.__version__.split('+')[0]}"  # this machine's build, not a new download
    command = [str(python), "-m", "pip", "install", "-q", "--upgrade", torch_release, "pillow", requirement]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"pip install {requirement} failed:\n{done.stderr[-3000:]}"
    return python


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One folder per head, each saved by its own class, and a trained multitask folder for the pipelines."""
    root = tmp_path_factory.mktemp("checkpoints")
    processor = colour_processor()
    for head, head_class in HEAD_CLASSES.items():
        torch.manual_seed(0)
        head_class(colour_config()).save_pretrained(root / head)
        processor.save_pretrained(root / head)
    save_trained_colour_checkpoint(root / PIPELINES_FOLDER, processor)
    return root


@pytest.fixture(scope="module")
def venvs():
    releases = RELEASES | {"below_minimum": f"transformers=={BELOW_MINIMUM}"}
    with ThreadPoolExecutor(len(releases)) as pool:  # the installs overlap their downloads
        futures = {name: pool.submit(prepare_venv, name, requirement) for name, requirement in releases.items()}
        return {name: future.result() for name, future in futures.items()}


def clean_env(hf_home) -> dict:
    """This process's environment without its venv, offline, with a Hugging Face cache of its own."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return env | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def package_results(checkpoints):
    return run_checks(str(checkpoints), str(checkpoints / "images"))


@pytest.fixture(scope="module", params=list(RELEASES))
def remote_results(request, venvs, checkpoints, tmp_path_factory):
    """(tensors, report) of `remote_checks.py` run in the venv of one release, from a folder outside the repo; the
    pipelines read the same image files as the package's run."""
    out = tmp_path_factory.mktemp(f"remote_{request.param}")
    script = [str(TESTS / "remote_checks.py"), str(checkpoints), str(checkpoints / "images"), str(out)]
    command = [str(venvs[request.param]), *script]
    done = subprocess.run(
        command, cwd=out, env=clean_env(out / "hf_home"), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return load_file(out / "tensors.safetensors"), json.loads((out / "report.json").read_text())


def test_the_minimum_environment_runs_the_minimum_release_and_the_newest_one_a_release_at_least_as_new(
    remote_results, request
):
    installed = remote_results[1]["transformers"]
    if request.node.callspec.params["remote_results"] == "minimum":
        assert installed == MINIMUM_TRANSFORMERS
    else:
        assert Version(installed) >= Version(MINIMUM_TRANSFORMERS)


def test_every_head_and_pipeline_model_is_served_by_the_checkpoint_code(remote_results):
    report = remote_results[1]
    for head, name in (report["classes"] | report["pipelines"]["model_classes"]).items():
        assert name.startswith("transformers_modules."), (head, name)


def test_processor_and_forward_outputs_match_the_package(remote_results, package_results):
    tensors, expected = remote_results[0], package_results[0]
    forward_names = [name for name in expected if not name.startswith("generate/")]
    assert len(forward_names) > len(HEADS)
    for name in forward_names:
        assert tensors[name].shape == expected[name].shape, name
        assert torch.allclose(tensors[name], expected[name], atol=1e-5), name


def test_generated_tokens_match_the_package_greedy_and_beam_with_and_without_cache(remote_results, package_results):
    tensors, expected = remote_results[0], package_results[0]
    for run in GENERATION_RUNS:
        assert tensors[f"generate/{run}"].shape[1] == 2 + NEW_TOKENS, run
        assert torch.equal(tensors[f"generate/{run}"], expected[f"generate/{run}"]), run


def test_generation_with_the_cache_feeds_the_decoder_one_new_token_a_step(remote_results):
    lengths = remote_results[1]["decoder_input_lengths"]
    for run, kwargs in GENERATION_RUNS.items():
        if kwargs["use_cache"]:  # the two-token prefix, then only the newest token
            assert lengths[run] == [2] + [1] * (NEW_TOKENS - 1), run
        else:  # the whole sequence again at every step
            assert lengths[run] == list(range(2, 2 + NEW_TOKENS)), run


def test_every_pipeline_gives_the_package_results(remote_results, package_results):
    remote, expected = remote_results[1]["pipelines"], package_results[1]["pipelines"]
    assert remote.keys() == expected.keys()
    for run in expected.keys() - {"pipeline_classes", "model_classes"}:  # classes: checkpoint code vs package
        assert_same_results(remote[run], expected[run], run)


def assert_same_results(actual, expected, where: str) -> None:
    """Equal JSON trees, floats within 1e-5 (`pytest.approx` does not nest)."""
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), where
        for key in expected:
            assert_same_results(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_same_results(a, e, f"{where}[{index}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-5), where
    else:
        assert actual == expected, where


def test_an_older_transformers_fails_to_load_with_an_import_error_naming_the_versions_and_the_fix(
    venvs, checkpoints, tmp_path
):
    command = [str(venvs["below_minimum"]), "-c", LOAD_EVERY_WAY, str(checkpoints / "generation")]
    done = subprocess.run(command, cwd=tmp_path, env=clean_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3, done.stdout
    for line in lines:
        assert "ImportError: vtfusion needs transformers >= " + MINIMUM_TRANSFORMERS in line, line
        assert f"transformers {BELOW_MINIMUM} is installed" in line and "pip install -U" in line, line


def test_the_package_requirement_admits_every_tested_release_so_pip_never_downgrades_one(remote_results):
    pyproject = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())
    (requirement,) = [r for r in map(Requirement, pyproject["project"]["dependencies"]) if r.name == "transformers"]
    assert requirement.specifier.contains(remote_results[1]["transformers"])
    assert requirement.specifier.contains(MINIMUM_TRANSFORMERS) and not requirement.specifier.contains(BELOW_MINIMUM)
