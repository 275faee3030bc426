"""The training entry point, end to end on a 64-scene SynthShapes with tiny models: every task trains and saves a
checkpoint its head loads, the test-split metrics come out, two processes train under `accelerate launch`, a run
killed mid-training resumes to the result of an uninterrupted one, and bad column names fail with the columns."""

import inspect
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from huggingface_hub import ModelCard
from tiny_models import QUIET_ARGS, TINY_MODEL_ARGS, TINY_TEXT, random_batch, tiny_config
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertModel, DataCollatorForLanguageModeling, TrainingArguments, ViTModel

from modeling_vtfusion import (
    VTFusionConfig,
    VTFusionForConditionalGeneration,
    VTFusionForImageTextRetrieval,
    VTFusionForPreTraining,
    VTFusionForSequenceClassification,
    VTFusionModel,
    VTFusionProcessor,
)
from training import fusion_study, main_job, train
from training.args import DataArguments
from training.data import VTFusionCollator, build_transform
from training.multitask import VTFusionForMultitask
from training.synthshapes import load_synthshapes, write_imagefolder
from training.tasks import TASKS


REPO_ROOT = Path(__file__).resolve().parents[1]
HEADS = {task: spec.head for task, spec in TASKS.items() if task != "multitask"}  # multitask: its own tests


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and `train.main` keeps it (it splits the cores only without
    OMP_NUM_THREADS): spinning OpenMP threads on a shared CPU cost ~10 ms per tiny matmul (a 3 s test took 65 s)."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def synthshapes(tmp_path_factory) -> Path:
    """64 scenes: 51 train, 7 validation, 6 test."""
    return write_imagefolder(tmp_path_factory.mktemp("data") / "synthshapes", num_scenes=64, seed=0)


def run_args(synthshapes: Path, output_dir: Path, task: str, *extra: str) -> list[str]:
    return [
        f"--task={task}",
        f"--output_dir={output_dir}",
        f"--synthshapes_dir={synthshapes}",
        "--synthshapes_num_scenes=64",
        "--per_device_train_batch_size=8",
        "--save_strategy=no",
        *TINY_MODEL_ARGS,
        *QUIET_ARGS,
        *extra,
    ]


@pytest.fixture(scope="module")
def multitask_run(synthshapes, tmp_path_factory) -> tuple[Path, dict]:
    output_dir = tmp_path_factory.mktemp("multitask")
    args = ["--do_train", "--do_predict", "--max_steps=2", "--max_test_samples=6", "--generation_max_new_tokens=6"]
    return output_dir, train.main(run_args(synthshapes, output_dir, "multitask", *args))


def assert_hub_ready(output_dir: Path) -> None:
    config = json.loads((output_dir / "config.json").read_text())
    assert {"AutoConfig", "AutoModel", "AutoProcessor", "AutoModelForImageTextToText"} <= set(config["auto_map"])
    for name in ("model.safetensors", "modeling_vtfusion.py", "configuration_vtfusion.py", "processing_vtfusion.py"):
        assert (output_dir / name).is_file(), name
    assert VTFusionProcessor.from_pretrained(output_dir).tokenizer.vocab_size == config["text_config"]["vocab_size"]


def assert_loads_without_missing_weights(head, output_dir: Path) -> None:
    _, info = head.from_pretrained(output_dir, output_loading_info=True)
    assert info["missing_keys"] == set() or info["missing_keys"] == []


@pytest.mark.parametrize("task", list(HEADS))
def test_task_trains_and_saves_a_checkpoint_its_head_loads(task, synthshapes, tmp_path):
    metrics = train.main(run_args(synthshapes, tmp_path, task, "--do_train", "--max_steps=2"))

    assert math.isfinite(metrics["train_loss"])
    assert_hub_ready(tmp_path)
    assert_loads_without_missing_weights(HEADS[task], tmp_path)


def test_training_starts_from_two_pretrained_encoders(synthshapes, tmp_path, tiny_tokenizer, tiny_image_processor):
    config = tiny_config()
    vision, text = ViTModel(config.vision_config), BertModel(config.text_config)
    vision.save_pretrained(tmp_path / "vit")
    tiny_image_processor.save_pretrained(tmp_path / "vit")
    text.save_pretrained(tmp_path / "bert")
    tiny_tokenizer.save_pretrained(tmp_path / "bert")
    encoders = [f"--vision_model_name_or_path={tmp_path / 'vit'}", f"--text_model_name_or_path={tmp_path / 'bert'}"]

    train.main(run_args(synthshapes, tmp_path / "run", "retrieval", "--do_train", "--max_steps=1", *encoders))

    trained = VTFusionForImageTextRetrieval.from_pretrained(tmp_path / "run")
    assert VTFusionProcessor.from_pretrained(tmp_path / "run").tokenizer.get_vocab() == tiny_tokenizer.get_vocab()
    # one step at the default learning rate moves the pretrained weights by ~1e-4: they were loaded, not drawn
    for trained_weight, pretrained_weight in (
        (trained.vtfusion.text_model.embeddings.word_embeddings.weight, text.embeddings.word_embeddings.weight),
        (trained.vtfusion.vision_model.embeddings.cls_token, vision.embeddings.cls_token),
    ):
        torch.testing.assert_close(trained_weight, pretrained_weight, atol=1e-3, rtol=0)


def test_total_flos_is_the_measured_flops_of_a_training_step_times_the_steps(tmp_path):
    model = VTFusionForPreTraining(tiny_config())
    batch = random_batch() | {"return_loss": True}
    with FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    args = TrainingArguments(tmp_path, max_steps=3, per_device_train_batch_size=4, report_to="none", use_cpu=True)
    trainer = train.VTFusionTrainer(
        model=model, args=args, train_dataset=[0] * 12, data_collator=lambda rows: dict(batch)
    )

    trainer.train()

    assert trainer.state.total_flos == 3 * counter.get_total_flops() > 0


def test_multitask_losses_are_those_of_the_heads_with_the_same_weights():
    torch.manual_seed(0)
    model = VTFusionForMultitask(tiny_config(num_labels=2)).eval()
    images = random_batch(batch_size=3, length=8)  # pixel_values and captions
    pixels, captions = images.pop("pixel_values"), images
    texts = {k: v for k, v in random_batch(batch_size=3, length=6, seed=1).items() if k != "pixel_values"}
    answers = random_batch(batch_size=3, length=3, seed=2)["input_ids"][:, 1:]  # "w [SEP]": no [CLS]
    caption_labels = captions["input_ids"][:, 1:].masked_fill(captions["attention_mask"][:, 1:] == 0, -100)
    generation = VTFusionForConditionalGeneration(model.config).eval()
    classification = VTFusionForSequenceClassification(model.config).eval()
    for head in (generation, classification):
        head.load_state_dict(model.state_dict(), strict=False)

    multitask = model(
        pixel_values=pixels,
        **captions,
        question_input_ids=texts["input_ids"],
        question_attention_mask=texts["attention_mask"],
        question_image_index=torch.arange(3),
        answer_labels=answers,
        statement_input_ids=texts["input_ids"],
        statement_attention_mask=texts["attention_mask"],
        entailment_labels=torch.tensor([0, 1, 1]),
    )

    torch.testing.assert_close(multitask.vqa_loss, generation(pixel_values=pixels, **texts, labels=answers).loss)
    torch.testing.assert_close(multitask.lm_loss, generation(pixel_values=pixels, labels=caption_labels).loss)
    torch.testing.assert_close(multitask.entailment_logits, classification(pixel_values=pixels, **texts).logits)


def test_multitask_without_itm_trains_no_itm_weight_and_keeps_the_saved_loss_weight(synthshapes, tmp_path):
    pretrained = tmp_path / "pretrain"
    train.main(run_args(synthshapes, pretrained, "pretrain", "--do_train", "--max_steps=1"))
    before = VTFusionForMultitask.from_pretrained(pretrained).itm_head.weight.detach().clone()

    args = ["--do_train", "--max_steps=2", f"--model_name_or_path={pretrained}", "--multitask_itm=false"]
    metrics = train.main(run_args(synthshapes, tmp_path / "multitask", "multitask", *args))

    assert math.isfinite(metrics["train_loss"])
    after = VTFusionForMultitask.from_pretrained(tmp_path / "multitask")
    torch.testing.assert_close(after.itm_head.weight, before, atol=0, rtol=0)
    assert after.config.itm_loss_weight == 1.0  # a retrieval run from this checkpoint trains ITM again


@pytest.mark.parametrize(
    "task, head", [("multitask", VTFusionForMultitask), ("classification", VTFusionForSequenceClassification)]
)
def test_a_new_two_way_classifier_starts_as_the_pretrained_itm_head(task, head, synthshapes, tmp_path):
    pretrained = tmp_path / "pretrain"
    train.main(run_args(synthshapes, pretrained, "pretrain", "--do_train", "--max_steps=1"))
    itm_head = VTFusionForPreTraining.from_pretrained(pretrained).itm_head

    args = ["--do_train", "--max_steps=1", "--learning_rate=0", f"--model_name_or_path={pretrained}"]
    train.main(run_args(synthshapes, tmp_path / task, task, *args))

    classifier = head.from_pretrained(tmp_path / task).classifier
    torch.testing.assert_close(classifier.weight, itm_head.weight, atol=0, rtol=0)
    torch.testing.assert_close(classifier.bias, itm_head.bias, atol=0, rtol=0)


def test_mlp_ratio_sets_the_feed_forward_width_of_every_transformer(synthshapes, tmp_path):
    train.main(run_args(synthshapes, tmp_path, "captioning", "--do_train", "--max_steps=1", "--mlp_ratio=2"))

    config = VTFusionConfig.from_pretrained(tmp_path)
    hidden = config.text_config.hidden_size
    assert config.text_config.intermediate_size == config.fusion_intermediate_size == 2 * hidden
    assert config.decoder_intermediate_size == 2 * hidden


def test_pretraining_with_itm_weight_zero_skips_itm():
    model = VTFusionForPreTraining(tiny_config(itm_loss_weight=0.0))
    batch = random_batch(batch_size=3, length=8)

    outputs = model(**batch)

    assert outputs.itm_logits is None and outputs.itm_loss == 0
    outputs.loss.backward()
    assert model.itm_head.weight.grad is None


@pytest.mark.parametrize(("stages", "image_size", "grid"), [(3, 64, 4), (4, 96, 3)])
def test_resnet_stages_set_the_token_grid(stages, image_size, grid, synthshapes, tmp_path):
    args = ["--vision_model_type=resnet", f"--resnet_stages={stages}", f"--image_size={image_size}"]
    train.main(run_args(synthshapes, tmp_path, "retrieval", "--do_train", "--max_steps=1", *args))

    model = VTFusionModel.from_pretrained(tmp_path)
    tokens, _, _ = model.encode_image(torch.zeros(1, 3, image_size, image_size))
    assert tokens.shape[1] == grid * grid


def test_multitask_batch_flattens_several_statements_per_image_with_their_image_index(synthshapes, tiny_processor):
    data_args = DataArguments(
        text_column="caption", train_statement_column="statements", train_label_column="statement_labels"
    )
    rows = load_synthshapes(synthshapes)["train"].select(range(3))[:]
    transform = build_transform("multitask", tiny_processor, data_args)

    features = transform(rows)
    batch = VTFusionCollator(tiny_processor.tokenizer.pad_token_id)(
        [dict(zip(features, v)) for v in zip(*features.values())]
    )

    counts = [min(data_args.max_statements_per_image, len(statements)) for statements in rows["statements"]]
    assert batch["statement_image_index"].tolist() == [i for i, n in enumerate(counts) for _ in range(n)]
    assert batch["statement_input_ids"].shape[0] == batch["entailment_labels"].shape[0] == sum(counts)
    decoded = tiny_processor.batch_decode(batch["statement_input_ids"], skip_special_tokens=True)
    for text, label, image in zip(decoded, batch["entailment_labels"], batch["statement_image_index"]):
        known = dict(zip(rows["statements"][image], rows["statement_labels"][image]))
        assert known[text] == label


def test_collator_masks_caption_words_for_mlm_and_labels_only_them(tiny_processor):
    tokenizer = tiny_processor.tokenizer
    captions = tokenizer(["a red circle at the top left", "two shapes"], return_token_type_ids=False)
    features = [{"input_ids": ids, "attention_mask": mask} for ids, mask in zip(*captions.values())]
    mlm = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.5, seed=0)

    batch = VTFusionCollator(tokenizer.pad_token_id, mlm=mlm)(features)

    masked = batch["mlm_labels"] != -100
    assert masked.any()
    assert torch.equal(batch["mlm_labels"][masked], batch["input_ids"][masked])
    special = torch.isin(batch["input_ids"], torch.tensor(tokenizer.all_special_ids))
    assert not (masked & special).any()
    assert torch.equal(batch["mlm_input_ids"][~masked], batch["input_ids"][~masked])


def test_mlm_without_a_mask_token_names_the_flag_that_turns_it_off(tiny_processor):
    tiny_processor.tokenizer.mask_token = None

    with pytest.raises(ValueError, match="--mlm_probability 0"):
        train.build_collator("pretrain", tiny_processor, DataArguments(), seed=0)
    assert train.build_collator("pretrain", tiny_processor, DataArguments(mlm_probability=0.0), seed=0).mlm is None


def test_multitask_checkpoint_serves_every_head(multitask_run):
    output_dir, _ = multitask_run

    assert_hub_ready(output_dir)
    for head in (*HEADS.values(), VTFusionModel):
        assert_loads_without_missing_weights(head, output_dir)


def test_multitask_reports_every_test_metric(multitask_run):
    _, metrics = multitask_run
    names = ["retrieval_t2i_r1", "retrieval_i2t_r1", "retrieval_t2i_r1_canonical", "vqa_accuracy", "bleu4", "rouge_l"]
    names += ["classification_accuracy", "classification_macro_f1", "classification_relational_accuracy"]

    for name in names:
        assert 0.0 <= metrics[f"test_{name}"] <= 1.0, name
    assert metrics["test_cider"] >= 0.0


def test_class_weighting_and_balanced_sampling_train_and_report_each_class(synthshapes, tmp_path):
    flags = [
        "--class_weighting=inverse_frequency",
        "--balanced_sampling",
        "--do_train",
        "--do_predict",
        "--max_steps=2",
    ]
    metrics = train.main(run_args(synthshapes, tmp_path, "classification", *flags))
    weights = json.loads((tmp_path / "config.json").read_text())["class_weights"]
    assert len(weights) == 2 and sum(weights) == pytest.approx(2.0)
    assert {"test_classification_recall_0", "test_classification_recall_1"} <= metrics.keys()


def test_class_weighting_outside_classification_names_the_task(synthshapes, tmp_path):
    with pytest.raises(ValueError, match="use them with --task classification"):
        train.main(run_args(synthshapes, tmp_path, "retrieval", "--do_train", "--balanced_sampling"))


def test_local_folder_with_a_corrupt_image_trains(synthshapes, tmp_path):
    folder = tmp_path / "my_data"
    shutil.copytree(synthshapes, folder)
    first_image = sorted((folder / "train").glob("*.png"))[0]
    first_image.write_bytes(b"not a png")
    args = run_args(synthshapes, tmp_path / "run", "classification", "--do_train", "--max_steps=5")

    metrics = train.main([*args, f"--dataset_name={folder}", "--per_device_train_batch_size=10"])

    # 50 readable rows of 51 make 5 batches of 10: one epoch (51 rows would make 6)
    assert metrics["epoch"] == pytest.approx(1.0)
    assert metrics["skipped_unreadable_images"] == 1
    assert json.loads((tmp_path / "run" / "train_results.json").read_text())["skipped_unreadable_images"] == 1


def test_streaming_trains_for_max_steps(synthshapes, tmp_path):
    train.main(run_args(synthshapes, tmp_path, "pretrain", "--do_train", "--streaming", "--max_steps=2"))

    assert json.loads((tmp_path / "trainer_state.json").read_text())["global_step"] == 2


def test_streaming_without_max_steps_is_refused(synthshapes, tmp_path):
    with pytest.raises(ValueError, match="--max_steps"):
        train.main(run_args(synthshapes, tmp_path, "pretrain", "--do_train", "--streaming"))


def test_wrong_column_name_lists_the_columns(synthshapes, tmp_path):
    with pytest.raises(ValueError, match=r"--text_column 'descr' is not a column.*caption.*statement"):
        train.main(run_args(synthshapes, tmp_path, "classification", "--do_train", "--text_column=descr"))


def test_main_job_writes_results_and_a_hub_ready_folder(synthshapes, tmp_path):
    output_dir = tmp_path / "demo"
    results = main_job.main(
        [
            f"--output_dir={output_dir}",
            f"--synthshapes_dir={synthshapes}",
            "--num_scenes=64",
            "--pretrain_steps=1",
            "--finetune_steps=1",
            "--batch_size=8",
            "--hidden_size=32",
            "--num_hidden_layers=1",
            "--image_size=32",
            "--test_samples=6",
            "--attention_scenes=3",
            "--extra",
            *TINY_MODEL_ARGS[3:],
            *QUIET_ARGS,
            "--generation_max_new_tokens=4",
        ]
    )

    expected = {"attention_color_hit_rate", "attention_shape_hit_rate", "wall_time_s", "matmul_gflops"}
    assert set(main_job.HEADLINE) | expected <= set(results) and results["matmul_gflops"] > 0
    assert json.loads((output_dir / "results.json").read_text()) == results
    assert len(list((output_dir / "attention").glob("*.png"))) == 3
    assert_hub_ready(output_dir)
    card = ModelCard.load(output_dir / "README.md")
    assert card.data.library_name == "transformers"
    reported = {m["name"]: m["value"] for r in card.data.to_dict()["model-index"][0]["results"] for m in r["metrics"]}
    assert reported["Text-to-image Recall@1"] == pytest.approx(results["retrieval_t2i_r1"])


def test_fusion_study_writes_table_and_chart(tmp_path):
    metrics = dict.fromkeys(fusion_study.COLUMNS, 0.5) | {"wall_time_s": 1.0}
    results = {"cross_attention": metrics, "late": metrics | {"entailment_relational_accuracy": 0.25}}

    table = fusion_study.markdown_table(results)
    fusion_study.bar_chart(results, tmp_path / "chart.png")

    assert table.splitlines()[3].startswith("| late |") and "0.250" in table.splitlines()[3]
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"


def test_fusion_study_reuses_finished_runs_instead_of_training_them_again(tmp_path):
    metrics = dict.fromkeys(fusion_study.COLUMNS, 0.75) | {"wall_time_s": 2.0}
    (tmp_path / "late").mkdir()
    (tmp_path / "late" / "results.json").write_text(json.dumps(metrics))

    results = fusion_study.main([f"--output_dir={tmp_path}", "--fusion_types", "late"])

    assert results == {"late": metrics}
    assert "| late | 0.750 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "fusion_study.png").exists()


@pytest.mark.parametrize("config", sorted((REPO_ROOT / "training" / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_accelerate_config_is_valid(config):
    assert load_config_from_file(str(config)).num_processes >= 2


def subprocess_env() -> dict:
    return os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_accelerate_launch_trains_on_two_processes(synthshapes, tmp_path):
    config = REPO_ROOT / "training" / "configs" / "cpu_2proc.yaml"
    args = run_args(synthshapes, tmp_path, "retrieval", "--do_train", "--max_steps=2", "--log_level=info")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    command += ["--main_process_port", "29517", "-m", "training.train", *args]

    done = subprocess.run(command, cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "Total train batch size (w. parallel, distributed & accumulation) = 16" in done.stdout + done.stderr
    assert (tmp_path / "model.safetensors").is_file()


@pytest.mark.parametrize("task", ["captioning", "vqa"])
def test_generation_metrics_on_two_processes_equal_those_of_one(task, synthshapes, tmp_path):
    """The test split's captions / answers are generated in Trainer's prediction loop, shared by the processes."""
    trained = tmp_path / "trained"
    train.main(run_args(synthshapes, trained, task, "--do_train", "--max_steps=4"))
    predict = ["--do_predict", f"--model_name_or_path={trained}", "--generation_max_new_tokens=6"]
    predict += ["--test_batch_size=2"]  # several batches a process, the last one evened out with repeated rows
    one = train.main(run_args(synthshapes, tmp_path / "one", task, *predict))
    config = REPO_ROOT / "training" / "configs" / "cpu_2proc.yaml"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    command += ["--main_process_port", "29518", "-m", "training.train", *run_args(synthshapes, tmp_path / "two", task)]

    done = subprocess.run(
        [*command, *predict], cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "test_results.json").read_text())
    names = ["bleu4", "rouge_l", "cider"] if task == "captioning" else ["vqa_accuracy"]
    assert {name: two[name] for name in names} == {name: one[f"test_{name}"] for name in names}


def test_generated_texts_on_two_processes_are_those_of_one_in_row_order(tmp_path, tiny_processor):
    torch.manual_seed(0)
    text_config = dict(TINY_TEXT, vocab_size=len(tiny_processor.tokenizer))
    config = tiny_config(text_config=text_config, initializer_range=0.5)  # large random weights: texts differ by image
    VTFusionForConditionalGeneration(config).save_pretrained(tmp_path)
    tiny_processor.save_pretrained(tmp_path)
    script = REPO_ROOT / "tests" / "generation_on_processes.py"
    config = REPO_ROOT / "training" / "configs" / "cpu_2proc.yaml"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    command += ["--main_process_port", "29519", str(script), str(tmp_path), str(tmp_path / "two.json")]

    done = subprocess.run(command, cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    one = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(tmp_path / "one.json")], cwd=REPO_ROOT, env=subprocess_env()
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert one.returncode == 0
    texts = json.loads((tmp_path / "one.json").read_text())
    assert len(texts) == 7 and len(set(texts)) == 7
    assert json.loads((tmp_path / "two.json").read_text()) == texts


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_run_killed_mid_training_resumes_to_the_uninterrupted_result(synthshapes, tmp_path):
    def args(output_dir, *extra):
        steps = ["--do_train", "--do_eval", "--max_steps=24", "--save_strategy=steps", "--save_steps=4"]
        return run_args(synthshapes, output_dir, "classification", *steps, *extra)

    reference = train.main(args(tmp_path / "reference"))
    killed_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "training.train", *args(killed_dir)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL)
    wait_for(killed_dir / "checkpoint-8" / "trainer_state.json", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed_dir / "model.safetensors").exists()  # it never reached the end

    resumed = train.main(args(killed_dir, "--resume_from_checkpoint=latest"))

    assert json.loads((killed_dir / "trainer_state.json").read_text())["global_step"] == 24
    assert resumed["eval_loss"] == pytest.approx(reference["eval_loss"], abs=0.02)


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_batch_holds_only_arguments_its_head_takes(task, synthshapes, tiny_processor):
    """The task table's transform and collator agree with its head: nothing a forward would silently drop."""
    spec = TASKS[task]
    data_args = DataArguments(text_column=spec.default_text_column)
    if task == "multitask":
        data_args.train_statement_column, data_args.train_label_column = "statements", "statement_labels"
    rows = load_synthshapes(synthshapes)["train"].select(range(3))[:]
    if spec.class_labels:  # string class names become ids as `train.py` maps them
        rows["statement_label"] = [0, 1, 0]
        data_args.label_column = "statement_label"
    features = build_transform(task, tiny_processor, data_args)(rows)
    batch = VTFusionCollator(tiny_processor.tokenizer.pad_token_id, return_loss=spec.loss_without_labels)(
        [dict(zip(features, values)) for values in zip(*features.values())]
    )
    accepted = set(inspect.signature(spec.head.forward).parameters)
    assert set(batch) <= accepted, set(batch) - accepted
    assert ("input_ids" in batch) == spec.fuses_text
    assert ("labels" in batch) == (spec.labels is not None or spec.questions)
