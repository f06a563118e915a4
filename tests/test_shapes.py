"""The Shapes world (scenes, captions, parser, renderer, dataset) and its checker."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections import Counter
from itertools import combinations

import numpy as np
import pytest
from PIL import Image

from loom.plugins.shapes import (
    ATTRIBUTES,
    BACKGROUND_COLOURS,
    BARE_POSITION_PHRASES,
    COLOURS,
    OBJECT_COLOURS,
    ONE_OBJECT_TEMPLATES,
    POSITION_PHRASES,
    POSITIONS,
    SHAPES,
    SIZES,
    TWO_OBJECT_TEMPLATES,
    PartialShape,
    PromptSpec,
    Scene,
    ShapesDataset,
    ShapesEval,
    ShapeSpec,
    caption,
    caption_with_template,
    parse_caption,
    render,
    sample_prompts,
    sample_scene,
)


def scenes(n: int, seed: int, two_object_prob: float = 0.5) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, two_object_prob) for _ in range(n)]


def corrupt(scene: Scene, attribute: str, rng: np.random.Generator) -> Scene:
    """``scene`` with exactly one attribute of one object (or the background) changed, keeping
    the world's constraints (distinct cells and colours, objects unlike the background)."""
    objs = list(scene.objects)
    k = int(rng.integers(len(objs)))
    o = objs[k]
    bg = scene.background

    def pick(options):
        return str(rng.choice(sorted(options)))

    if attribute == "background":
        bg = pick(set(BACKGROUND_COLOURS) - {bg} - {x.colour for x in objs})
    elif attribute == "colour":
        new = pick(set(OBJECT_COLOURS) - {bg} - {x.colour for x in objs})
        objs[k] = dataclasses.replace(o, colour=new)
    elif attribute == "shape":
        objs[k] = dataclasses.replace(o, shape=pick(set(SHAPES) - {o.shape}))
    elif attribute == "position":
        objs[k] = dataclasses.replace(o, position=pick(set(POSITIONS) - {x.position for x in objs}))
    elif attribute == "size":
        objs[k] = dataclasses.replace(o, size=pick(set(SIZES) - {o.size}))
    return Scene(bg, tuple(objs))


# ------------------------------------------------------------------ vocabulary and scenes


def test_vocabulary():
    assert OBJECT_COLOURS == ("red", "green", "blue", "yellow", "purple", "orange", "white")
    assert set(COLOURS) == set(OBJECT_COLOURS) | {"black", "gray"}
    assert set(BACKGROUND_COLOURS) == set(COLOURS)
    assert SHAPES == ("circle", "square", "triangle") and SIZES == ("small", "large")
    assert sorted(POSITIONS.values()) == [(r, c) for r in range(3) for c in range(3)]
    # The checker needs the palette well separated.
    for a, b in combinations(COLOURS.values(), 2):
        assert np.linalg.norm(np.subtract(a, b)) > 90


def test_sample_scene_constraints():
    counts = Counter()
    for s in scenes(3000, seed=1):
        counts[len(s.objects)] += 1
        assert s.background in BACKGROUND_COLOURS
        assert all(o.colour in OBJECT_COLOURS and o.colour != s.background for o in s.objects)
        if len(s.objects) == 2:
            a, b = s.objects
            assert a.position != b.position
            assert a.colour != b.colour
    assert set(counts) == {1, 2} and abs(counts[1] - counts[2]) < 300
    assert all(len(s.objects) == 1 for s in scenes(200, seed=2, two_object_prob=0.0))
    assert all(len(s.objects) == 2 for s in scenes(200, seed=2, two_object_prob=1.0))


def test_scene_dict_round_trip_and_validation():
    for s in scenes(100, seed=3):
        d = json.loads(json.dumps(s.to_dict()))
        assert Scene.from_dict(d) == s
    with pytest.raises(ValueError, match="unknown colour"):
        ShapeSpec("circle", "pink", "top", "small")
    with pytest.raises(ValueError, match="unknown position"):
        ShapeSpec("circle", "red", "upstairs", "small")
    with pytest.raises(ValueError):
        Scene("blue", ())


# ------------------------------------------------------------------ captions and parsing


def test_caption_parse_round_trip():
    rng = np.random.default_rng(4)
    for s in scenes(4000, seed=4):
        text = caption(s, rng)
        assert text == text.lower() and len(text.split()) <= 30, text
        spec = parse_caption(text)
        assert spec == PromptSpec.from_scene(s), text
        assert spec.to_scene() == s


@pytest.mark.parametrize("n_objects", [1, 2])
def test_every_template_round_trips_and_is_used(n_objects):
    templates = ONE_OBJECT_TEMPLATES if n_objects == 1 else TWO_OBJECT_TEMPLATES
    assert len(templates) >= (4 if n_objects == 1 else 3)
    rng = np.random.default_rng(5)
    pool = scenes(300, seed=5, two_object_prob=float(n_objects == 2))
    for t in range(len(templates)):
        for s in pool:
            text, used = caption_with_template(s, rng, template=t)
            assert used == t
            assert parse_caption(text).to_scene() == s, text
    drawn = Counter(caption_with_template(s, rng)[1] for s in pool)
    assert set(drawn) == set(range(len(templates)))


def test_every_position_phrase_parses():
    for name in POSITIONS:
        assert len(POSITION_PHRASES[name]) >= 3 and len(BARE_POSITION_PHRASES[name]) >= 3
        for phrase in POSITION_PHRASES[name]:
            spec = parse_caption(f"a small red circle {phrase} on a blue background")
            assert spec.objects[0].position == name, phrase
        for phrase in BARE_POSITION_PHRASES[name]:
            spec = parse_caption(f"small red circle, {phrase}, blue background")
            assert spec.objects[0].position == name, phrase


def test_free_text_parse():
    spec = parse_caption("a red circle on a blue background")
    assert spec.background == "blue"
    assert spec.objects == [PartialShape(shape="circle", colour="red", position=None, size=None)]
    assert not spec.complete

    text = "A big grey box in the upper-right corner next to a tiny violet disc. Background: white"
    spec = parse_caption(text)
    assert spec.background == "white"
    assert spec.objects == [
        PartialShape("square", "gray", "top right", "large"),
        PartialShape("circle", "purple", None, "small"),
    ]
    assert parse_caption("a red circle on blue.").background == "blue"
    assert parse_caption("a red circle on the left").objects[0].position == "left"
    assert parse_caption("a triangle").objects == [PartialShape(shape="triangle")]
    assert parse_caption("a triangle").background is None


@pytest.mark.parametrize("text", ["", "hello world", "a blue background", "something on the left"])
def test_garbage_text_raises(text):
    with pytest.raises(ValueError, match="expected a description such as"):
        parse_caption(text)


# ------------------------------------------------------------------ rendering and dataset


@pytest.mark.parametrize("size", [32, 48, 64, 100, 256])
def test_render_shape_and_background(size):
    s = Scene("gray", (ShapeSpec("triangle", "red", "center", "large"),))
    img = render(s, size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == COLOURS["gray"]
    assert tuple(img[size // 2, size // 2]) == COLOURS["red"]
    assert np.array_equal(img, render(s, size))


def test_render_jitter_is_seeded():
    s = scenes(1, seed=6)[0]
    a = render(s, 64, np.random.default_rng(1))
    assert np.array_equal(a, render(s, 64, np.random.default_rng(1)))
    assert not np.array_equal(a, render(s, 64, np.random.default_rng(2)))
    with pytest.raises(ValueError, match="at least 32"):
        render(s, 16)


def test_dataset_is_deterministic():
    a, b, c = ShapesDataset(seed=0), ShapesDataset(seed=0), ShapesDataset(seed=1)
    items_a = a.batch(0, 20)
    items_b = b.batch(0, 20)
    for x, y in zip(items_a, items_b):
        assert x.image.tobytes() == y.image.tobytes()
        assert x.caption == y.caption and x.scene == y.scene
    # An item depends only on (seed, index), not on what was drawn before it.
    assert a.item(13).image.tobytes() == items_a[13].image.tobytes()
    assert a.batch(10, 3)[0].caption == items_a[10].caption
    other = c.batch(0, 20)
    assert sum(x.image.tobytes() == y.image.tobytes() for x, y in zip(items_a, other)) == 0
    assert [x.caption for x in items_a] != [x.caption for x in other]
    imgs, caps = a.arrays(0, 4)
    assert imgs.shape == (4, 64, 64, 3) and caps == [x.caption for x in items_a[:4]]
    assert ShapesDataset(seed=0, size=48).item(0).image.shape == (48, 48, 3)
    for it in items_a:
        assert parse_caption(it.caption).to_scene() == it.scene


def test_sample_prompts_are_fresh_and_deterministic():
    prompts = sample_prompts(50, seed=0)
    assert prompts == sample_prompts(50, seed=0)
    assert prompts != sample_prompts(50, seed=1)
    train = {it.caption for it in ShapesDataset(seed=0).batch(0, 50)}
    assert len(train & {text for text, _ in prompts}) < 5
    for text, scene in prompts:
        assert parse_caption(text).to_scene() == scene


# ------------------------------------------------------------------ the checker


@pytest.mark.parametrize("size", [48, 64, 256])
def test_eval_ground_truth(size):
    rng = np.random.default_rng(100 + size)
    pool = [sample_scene(rng) for _ in range(500)]
    images = [render(s, size, rng) for s in pool]
    rng_captions = np.random.default_rng(size)
    prompts = [caption(s, rng_captions) for s in pool]
    report = ShapesEval().evaluate_many(images, prompts)
    assert report.n == 500
    assert report.whole_prompt >= 0.99, report.per_attribute
    assert all(v >= 0.99 for v in report.per_attribute.values())
    assert report.chance["whole_prompt"] < 0.001
    json.dumps(report.to_dict())


@pytest.mark.parametrize("attribute", ATTRIBUTES)
@pytest.mark.parametrize("size", [48, 64, 256])
def test_eval_flags_exactly_the_corrupted_attribute(attribute, size):
    ev = ShapesEval()
    rng = np.random.default_rng([ATTRIBUTES.index(attribute), size])
    for s in scenes(30 if size == 64 else 12, seed=size + len(attribute)):
        wrong = corrupt(s, attribute, rng)
        score = ev.evaluate(render(wrong, size, rng), s)
        expected = {a: a != attribute for a in ATTRIBUTES}
        assert score.attributes == expected, (s, wrong, score.detected)
        assert not score.correct


def test_eval_mismatched_images_score_near_chance():
    rng = np.random.default_rng(8)
    pool = scenes(200, seed=8)
    others = scenes(200, seed=9)
    report = ShapesEval().evaluate_many([render(o, 64, rng) for o in others], pool)
    assert report.whole_prompt < 0.02
    for a in ATTRIBUTES:
        assert report.per_attribute[a] < report.chance[a] + 0.1


def test_eval_accepts_any_image_and_prompt_form():
    ev = ShapesEval()
    s = Scene("blue", (ShapeSpec("circle", "red", "top left", "large"),))
    img = render(s, 64)
    full = "a large red circle in the top left on a blue background"
    pil = Image.fromarray(img)
    chw = img.transpose(2, 0, 1)
    for image in (img, img.astype(np.float32) / 255, pil, pil.resize((200, 150)), chw):
        for prompt in (full, s, parse_caption(full)):
            score = ev.evaluate(image, prompt)
            assert score.correct and score.objects == 1 and score.found == 1

    partial = ev.evaluate(img, "a circle on a blue background")
    assert partial.attributes == {
        "background": True, "colour": None, "shape": True, "position": None, "size": None,
    }  # fmt: skip
    assert partial.correct
    assert ev.evaluate(img, "a red square").attributes["background"] is None
    assert not ev.evaluate(img, "a red square").correct

    blank = ev.evaluate(np.full((64, 64, 3), 128, np.uint8), s)
    assert blank.found == 0 and not any(blank.attributes.values())

    report = ev.evaluate_many([img, img], [full, "a small red circle at the bottom"])
    assert report.n == 2 and report.whole_prompt == 0.5
    assert report.per_attribute["size"] == 0.5 and report.per_attribute["background"] == 1.0
    assert report.chance["shape"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        ev.evaluate_many([img], [])


def test_two_object_attribute_needs_both_right():
    a = ShapeSpec("circle", "red", "top left", "large")
    s = Scene("black", (a, ShapeSpec("square", "green", "bottom", "small")))
    wrong = Scene("black", (s.objects[0], dataclasses.replace(s.objects[1], shape="triangle")))
    score = ShapesEval().evaluate(render(wrong, 64), s)
    assert score.objects == 2 and score.found == 2
    assert score.attributes["shape"] is False and score.attributes["colour"] is True


def test_eval_speed():
    rng = np.random.default_rng(10)
    pool = scenes(200, seed=10)
    images = [render(s, 64, rng) for s in pool]
    ev = ShapesEval()
    start = time.perf_counter()
    ev.evaluate_many(images, pool)
    assert time.perf_counter() - start < 2.0


def test_import_stays_light():
    code = (
        "import sys, loom, loom.plugins; before = set(sys.modules); import loom.plugins.shapes; "
        "heavy = {'torch', 'scipy', 'transformers', 'diffusers'}; "
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
