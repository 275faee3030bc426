"""`training.synthshapes`: every text of a scene is true to its image, and the data set is balanced and split."""

import json
import re
from collections import Counter

import numpy as np
import pytest

from training.synthshapes import COLORS, SIZES, generate_scenes, load_synthshapes, main, make_scene, write_imagefolder


NUM_SCENES = 400
SPLIT_NAMES = ("train", "validation", "test")
POSITION_PHRASES = {
    (0, 0): "at the top left",
    (0, 1): "at the top",
    (0, 2): "at the top right",
    (1, 0): "on the left",
    (1, 1): "in the center",
    (1, 2): "on the right",
    (2, 0): "at the bottom left",
    (2, 1): "at the bottom",
    (2, 2): "at the bottom right",
}
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
RELATIONS = {
    "left of": lambda a, b: a["col"] < b["col"],
    "right of": lambda a, b: a["col"] > b["col"],
    "above": lambda a, b: a["row"] < b["row"],
    "below": lambda a, b: a["row"] > b["row"],
    "larger than": lambda a, b: (a["size"], b["size"]) == ("large", "small"),
    "smaller than": lambda a, b: (a["size"], b["size"]) == ("small", "large"),
}
RELATION = "|".join(RELATIONS)
STATEMENT_LISTS = ("statements", "statement_labels", "statement_relational")


@pytest.fixture(scope="module")
def scenes():
    return generate_scenes(NUM_SCENES, seed=0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_imagefolder(tmp_path_factory.mktemp("data") / "synthshapes", num_scenes=200, seed=0)


def resolve(description: str, objects: list[dict]) -> list[dict]:
    """The objects a description such as "red circle", "large circle" or "small red object" fits."""
    words = set(description.split()) - {"object"}
    return [obj for obj in objects if words <= {obj["size"], obj["color"], obj["shape"]}]


def the(description: str, objects: list[dict]) -> dict:
    (obj,) = resolve(description, objects)  # a definite description names exactly one object
    return obj


def statement_holds(statement: str, objects: list[dict]) -> bool:
    if m := re.fullmatch(rf"the (\w+ \w+) is ({RELATION}) the (\w+ \w+)", statement):
        return RELATIONS[m[2]](the(m[1], objects), the(m[3], objects))
    if m := re.fullmatch(r"there is an? (\w+ \w+)", statement):
        return bool(resolve(m[1], objects))
    if m := re.fullmatch(r"there (?:is|are) (\w+) shapes?", statement):
        return NUMBER_WORDS.index(m[1]) == len(objects)
    if m := re.fullmatch(r"the (\w+ \w+) is (small|large)", statement):
        return the(m[1], objects)["size"] == m[2]
    m = re.fullmatch(r"the (\w+ \w+) is (.+)", statement)
    obj = the(m[1], objects)
    return POSITION_PHRASES[obj["row"], obj["col"]] == m[2]


def true_answer(question: str, objects: list[dict]) -> str:
    if m := re.fullmatch(r"what (?:color is|is the color of) the (.+)\?", question):
        return the(m[1], objects)["color"]
    if m := re.fullmatch(r"what (?:shape is|is the shape of) the (.+)\?", question):
        return the(m[1], objects)["shape"]
    if question in ("how many shapes are there?", "how many objects are in the image?"):
        return str(len(objects))
    if m := re.fullmatch(r"how many (\w+?)s are there\?", question):
        return str(len(resolve(m[1], objects)))
    if m := re.fullmatch(r"how many (\w+) shapes are there\?", question):
        return str(len(resolve(m[1], objects)))
    if m := re.fullmatch(r"(?:is there|does the image contain) an? (\w+ \w+)\?", question):
        return "yes" if resolve(m[1], objects) else "no"
    m = re.fullmatch(rf"is the (\w+ \w+) ({RELATION}) the (\w+ \w+)\?", question)
    return "yes" if RELATIONS[m[2]](the(m[1], objects), the(m[3], objects)) else "no"


def metadata(folder, split: str) -> list[dict]:
    return [json.loads(line) for line in (folder / split / "metadata.jsonl").read_text().splitlines()]


def test_same_seed_gives_identical_scenes_and_another_seed_other_scenes():
    first, again, other = generate_scenes(8, seed=3), generate_scenes(8, seed=3), generate_scenes(8, seed=4)
    for a, b, c in zip(first, again, other):
        assert np.array_equal(np.asarray(a.pop("image")), np.asarray(b.pop("image")))
        assert a == b
        assert a["caption"] != c["caption"] or a["statement"] != c["statement"]


def test_a_scene_depends_only_on_seed_and_index():
    scene = make_scene(7, seed=1)
    in_larger_set = generate_scenes(50, seed=1)[7]
    assert np.array_equal(np.asarray(scene.pop("image")), np.asarray(in_larger_set.pop("image")))
    assert scene == {key: value for key, value in in_larger_set.items() if key != "split"}


def test_images_are_64x64_rgb_with_each_shape_in_its_color_at_its_position(scenes):
    for scene in scenes[:100]:
        pixels = np.asarray(scene["image"], dtype=int)
        assert pixels.shape == (64, 64, 3)
        for obj in scene["objects"]:
            center = pixels[round(obj["y"]), round(obj["x"])]
            assert np.abs(center - COLORS[obj["color"]]).max() <= 30  # colour jitter 20 + pixel noise 6


def test_scenes_hold_one_to_four_shapes_that_do_not_overlap(scenes):
    assert Counter(scene["num_shapes"] for scene in scenes).keys() == {1, 2, 3, 4}
    for scene in scenes:
        objects = scene["objects"]
        assert len(objects) == scene["num_shapes"]
        for i, a in enumerate(objects):
            for b in objects[i + 1 :]:
                reach = SIZES[a["size"]] + SIZES[b["size"]]
                assert abs(a["x"] - b["x"]) >= reach or abs(a["y"] - b["y"]) >= reach


def test_caption_names_every_shape_with_size_color_and_position_left_to_right_then_top_to_bottom(scenes):
    for scene in scenes:
        objects = sorted(scene["objects"], key=lambda obj: (obj["col"], obj["row"]))
        phrases = [f"{o['size']} {o['color']} {o['shape']} {POSITION_PHRASES[o['row'], o['col']]}" for o in objects]
        offsets = [scene["caption"].find(phrase) for phrase in phrases]
        assert min(offsets) >= 0 and offsets == sorted(offsets)
        assert scene["caption"] == scene["canonical"] == scene["captions"][0]


def test_paraphrases_differ_but_name_every_shape(scenes):
    for scene in scenes:
        assert len(set(scene["captions"])) == len(scene["captions"]) >= 4
        for caption in scene["captions"]:
            assert all(f"{obj['color']} {obj['shape']}" in caption for obj in scene["objects"])


def test_every_answer_is_one_word_and_what_the_scene_shows(scenes):
    for scene in scenes:
        assert len(scene["questions"]) == len(scene["answers"]) == len(scene["question_types"])
        for question, answer in zip(scene["questions"], scene["answers"]):
            assert re.fullmatch(r"\w+", answer)
            # `true_answer` also fails when a question's object is not the only one its description fits
            assert true_answer(question, scene["objects"]) == answer


def test_questions_cover_every_type_and_yes_no_answers_are_balanced(scenes):
    types = Counter(kind for scene in scenes for kind in scene["question_types"])
    assert set(types) == {"color", "shape", "count", "exists", "spatial"}
    yes_no = [a for s in scenes for a, t in zip(s["answers"], s["question_types"]) if t in ("exists", "spatial")]
    assert 0.4 < np.mean([answer == "yes" for answer in yes_no]) < 0.6


def test_every_statement_label_says_whether_it_holds(scenes):
    for scene in scenes:
        assert statement_holds(scene["statement"], scene["objects"]) == bool(scene["label"])


def test_labels_are_balanced_and_half_the_statements_relational(scenes):
    kinds = Counter((scene["relational"], scene["label"]) for scene in scenes)
    assert kinds == dict.fromkeys([(True, 1), (True, 0), (False, 1), (False, 0)], NUM_SCENES / 4)


def test_swapping_the_objects_of_a_relational_statement_flips_its_truth(scenes):
    # a false relational statement reads with the words of a true one: only the image tells them apart
    for scene in (scene for scene in scenes if scene["relational"]):
        m = re.fullmatch(rf"the (\w+ \w+) is ({RELATION}) the (\w+ \w+)", scene["statement"])
        swapped = f"the {m[3]} is {m[2]} the {m[1]}"
        assert statement_holds(swapped, scene["objects"]) != statement_holds(scene["statement"], scene["objects"])


def test_training_statements_start_with_the_scene_statement_and_all_hold_as_labelled(scenes):
    for scene in scenes:
        assert (scene["statements"][0], scene["statement_labels"][0]) == (scene["statement"], scene["label"])
        for statement, label in zip(scene["statements"], scene["statement_labels"]):
            assert statement_holds(statement, scene["objects"]) == bool(label)


def test_training_statements_hold_a_relational_pair_in_both_orders_when_two_shapes_or_more(scenes):
    for scene in scenes:
        relational = [(s, y) for s, y, r in zip(*(scene[k] for k in STATEMENT_LISTS)) if r][-2:]
        if scene["num_shapes"] == 1:
            assert relational == []
            continue
        (false, _), (true, _) = relational
        assert [label for _, label in relational] == [0, 1]
        m = re.fullmatch(rf"the (\w+ \w+) is ({RELATION}) the (\w+ \w+)", true)
        assert false == f"the {m[3]} is {m[2]} the {m[1]}"


def test_written_splits_are_disjoint_and_cover_every_scene(folder):
    ids = {split: {record["scene_id"] for record in metadata(folder, split)} for split in SPLIT_NAMES}
    assert [len(ids[split]) for split in SPLIT_NAMES] == [160, 20, 20]
    assert set().union(*ids.values()) == set(range(200))
    assert sum(map(len, ids.values())) == 200  # no scene in two splits
    for split in SPLIT_NAMES:
        images = {path.name for path in (folder / split).glob("*.png")}
        assert images == {record["file_name"] for record in metadata(folder, split)}


def test_written_splits_are_each_balanced(folder):
    for split in SPLIT_NAMES:
        records = metadata(folder, split)
        kinds = Counter((record["relational"], record["label"]) for record in records)
        assert set(kinds.values()) == {len(records) / 4}


def test_write_imagefolder_reuses_a_matching_folder_and_rewrites_another(folder, tmp_path):
    marker = folder / "marker"
    marker.touch()
    assert write_imagefolder(folder, num_scenes=200, seed=0) == folder
    assert marker.exists()

    other = tmp_path / "other"
    write_imagefolder(other, num_scenes=8, seed=0)
    (other / "marker").touch()
    write_imagefolder(other, num_scenes=8, seed=1)
    assert not (other / "marker").exists()
    assert json.loads((other / "synthshapes.json").read_text())["seed"] == 1


def test_write_imagefolder_leaves_a_foreign_folder_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        write_imagefolder(tmp_path, num_scenes=8)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_load_synthshapes_gives_the_splits_with_every_metadata_column(folder, tmp_path):
    dataset = load_synthshapes(folder, cache_dir=str(tmp_path))
    assert {split: dataset[split].num_rows for split in dataset} == {"train": 160, "validation": 20, "test": 20}
    features = dataset["train"].features
    scalars = {"caption": "string", "canonical": "string", "statement": "string", "split": "string"}
    scalars |= {"label": "int64", "relational": "bool", "scene_id": "int64", "num_shapes": "int64"}
    assert {name: features[name].dtype for name in scalars} == scalars
    for name in ("captions", "questions", "answers", "question_types"):
        assert features[name].feature.dtype == "string"
    row = dataset["test"][0]
    record = metadata(folder, "test")[0]
    assert row["image"].size == (64, 64) and row["image"].mode == "RGB"
    assert row == {"image": row["image"], **{key: value for key, value in record.items() if key != "file_name"}}


def test_cli_writes_the_folder(tmp_path, monkeypatch):
    out_dir = tmp_path / "cli"
    monkeypatch.setattr("sys.argv", ["synthshapes", "--output_dir", str(out_dir), "--num_scenes", "10", "--seed", "2"])
    main()
    assert json.loads((out_dir / "synthshapes.json").read_text())["num_scenes"] == 10
    assert len(list(out_dir.glob("*/*.png"))) == 10
