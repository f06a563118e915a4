"""The Shapes world (scenes, captions, parser, renderer, dataset) and its checker."""

from __future__ import annotations

import dataclasses
import json
import re
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
    DIVERSITY_PROMPTS,
    EVALUATION_FRAMES,
    HELD_OUT,
    OBJECT_COLOURS,
    ONE_OBJECT_TEMPLATES,
    POSITION_PHRASES,
    POSITIONS,
    SHAPES,
    SIZES,
    TRAINING_FRAMES,
    TWO_OBJECT_TEMPLATES,
    UNDERSPECIFIED_KINDS,
    PartialShape,
    PromptSpec,
    Scene,
    ShapesDataset,
    ShapesEval,
    ShapeSpec,
    caption,
    caption_with_template,
    everyday_caption,
    is_held_out,
    parse_caption,
    render,
    sample_prompts,
    sample_scene,
    sample_training_scene,
    sample_underspecified_prompts,
    world,
    world_distribution,
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
    # what the world promises about its words, not a copy of them: backgrounds are the object
    # colours and black and gray; sizes are two; every word reads back through the parser
    assert set(COLOURS) == set(OBJECT_COLOURS) | {"black", "gray"} and len(set(OBJECT_COLOURS)) == len(OBJECT_COLOURS)
    assert set(BACKGROUND_COLOURS) == set(COLOURS)
    assert len(set(SHAPES)) == len(SHAPES) > 1 and len(set(SIZES)) == len(SIZES) == 2
    for colour in OBJECT_COLOURS:
        for shape in SHAPES:
            for size in SIZES:
                background = next(c for c in BACKGROUND_COLOURS if c != colour)
                read = parse_caption(f"a {size} {colour} {shape} on a {background} background")
                assert read == PromptSpec(background, [PartialShape(shape, colour, None, size)]), read
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
        ShapeSpec("circle", "teal", "top", "small")
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
    from loom.plugins.shapes import ShapesData

    prompts = sample_prompts(200, seed=0)
    assert prompts == sample_prompts(200, seed=0) and prompts[:50] == sample_prompts(50, seed=0)
    other = sample_prompts(200, seed=1)
    assert sum(a == b for a, b in zip(prompts, other)) == 0  # another seed, another stream
    texts = [text for text, _ in prompts]
    # "from a stream no dataset item uses": neither the dataset's items nor the training pool's
    # draws, position by position...
    items = ShapesDataset(seed=0).batch(0, 1000)
    training = ShapesData(64, pool=4000, seed=0)
    assert not any(scene == it.scene for (_, scene), it in zip(prompts, items))
    assert not any(scene == drawn for (_, scene), drawn in zip(prompts, training.scenes))
    # ...nor anywhere: they share a caption with those 5,000 only by chance (4 of 200 here, as an
    # independent stream does; a prompt drawn from either stream would share all of its)
    pool = {it.caption for it in items} | set(training.captions)
    shared = [text for text in texts if text in pool]
    assert len(shared) <= 8, shared
    for text, scene in prompts:
        assert parse_caption(text).to_scene() == scene


# ------------------------------------------------------------------ the checker


@pytest.mark.parametrize("size", [48, 64, pytest.param(256, marks=pytest.mark.slow)])
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
    assert report.chance["shape"] == pytest.approx(1 / len(SHAPES))  # a uniform guess among the shapes
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
    # CPU time of this process, not wall-clock: a busy machine does not fail it, a slow checker does
    start = time.process_time()
    ev.evaluate_many(images, pool)
    assert time.process_time() - start < 2.0  # 0.45-0.55 s of CPU on a 2-core dev machine


def test_import_stays_light():
    code = (
        "import sys, loom, loom.plugins; before = set(sys.modules); import loom.plugins.shapes; "
        "heavy = {'torch', 'scipy', 'transformers', 'diffusers'}; "
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ everyday captions and held-out combinations


def test_everyday_captions_parse_to_their_scene_at_the_stated_rates():
    rng = np.random.default_rng(21)
    n = 4000
    texts, stated, n_objects = [], Counter(), 0
    for _ in range(n):
        scene = sample_training_scene(rng)
        text = everyday_caption(scene, rng)
        texts.append(text)
        spec = parse_caption(text)
        assert len(spec.objects) == len(scene.objects), (text, scene)
        assert spec.background in (None, scene.background), (text, scene)
        stated["background"] += spec.background is not None
        for want, got in zip(scene.objects, spec.objects):
            n_objects += 1
            assert got.colour is not None or got.shape is not None, text
            for a in ("colour", "shape", "position", "size"):
                assert getattr(got, a) in (None, getattr(want, a)), (text, scene, a)
                stated[a] += getattr(got, a) is not None
    # A full caption states everything; the rest state each attribute at its own rate, so the
    # rate over the everyday captions alone is (overall - FULL) / (1 - FULL).
    full = world.FULL_CAPTION_SHARE
    expected = {**world.STATE_RATES, "colour": 1 - world.ONLY_SHAPE_RATE, "shape": 1 - world.ONLY_COLOUR_RATE}
    for a, rate in expected.items():
        overall = stated[a] / (n if a == "background" else n_objects)
        everyday = (overall - full) / (1 - full)
        assert abs(everyday - rate) <= 0.05, (a, overall, everyday, rate)

    words = Counter(w for t in texts for w in re.findall(r"[a-z]+", t))
    tables = (world._SIZE_SYNONYMS, world._COLOUR_SYNONYMS, world._SHAPE_SYNONYMS)
    synonyms = [w for table in tables for ws in table.values() for w in ws] + list(world._NO_SHAPE_WORDS)
    assert [w for w in synonyms if words[w] == 0] == []
    joined = "\n".join(texts)
    phrases = [p for ps in world.EVERYDAY_POSITION_PHRASES.values() for p in ps]
    assert [p for p in phrases if p not in joined] == []
    frames = [f.replace("{}", "").strip() for f in TRAINING_FRAMES if f != "{}"]
    assert [f for f in frames if f not in joined] == []
    # Evaluation phrasings stay out of training.
    evaluation_only = [f.replace("{}", "").strip(" ,") for f in EVALUATION_FRAMES if f != "{}"]
    assert [f for f in evaluation_only if re.search(rf"\b{f}\b", joined)] == []


def test_training_pool_holds_no_held_out_combination():
    from loom.plugins.shapes import ShapesData

    triples = {(c, s, p) for c in OBJECT_COLOURS for s in SHAPES for p in POSITIONS}
    assert HELD_OUT < triples and 20 <= len(HELD_OUT) <= 28, len(HELD_OUT)
    kept = triples - HELD_OUT
    for i, j in ((0, 1), (0, 2), (1, 2)):  # colour–shape, colour–position, shape–position
        pairs = {(t[i], t[j]) for t in triples}
        assert {(t[i], t[j]) for t in kept} == pairs, (i, j)

    data = ShapesData(64, pool=2000, seed=3)
    assert len(data) == 2000 and len(data.captions) == 2000
    found = {(o.colour, o.shape, o.position) for s in data.scenes for o in s.objects}
    assert not found & HELD_OUT
    # Only the held-out triples are avoided: every other one is in a pool this size.
    assert found == kept, sorted(kept - found)[:5]
    for text, scene in zip(data.captions, data.scenes):
        assert len(parse_caption(text).objects) == len(scene.objects), text

    unseen = sample_prompts(50, 5, combinations="unseen")
    seen = sample_prompts(50, 5, combinations="seen")
    assert len(unseen) == len(seen) == 50
    assert all(any(map(is_held_out, s.objects)) for _, s in unseen)
    assert not any(is_held_out(o) for _, s in seen for o in s.objects)
    for text, scene in unseen + seen:
        assert parse_caption(text).to_scene() == scene
    with pytest.raises(ValueError, match="combinations"):
        sample_prompts(5, 5, combinations="new")


@pytest.mark.parametrize("seed", [0, 1234, 20261125])
def test_sample_prompts_default_stream_is_unchanged(seed):
    # The published scores were measured on this stream: "any" must keep it item for item.
    rng = np.random.default_rng([seed, 0x50524F4D, 1])
    expected = []
    for _ in range(300):
        scene = sample_scene(rng, 0.5)
        expected.append((caption(scene, rng), scene))
    assert sample_prompts(300, seed) == expected
    assert sample_prompts(300, seed, combinations="any") == expected


# ------------------------------------------------------------------ underspecified and diversity splits


def test_underspecified_split_ground_truth():
    pairs = sample_underspecified_prompts(200, 11)
    assert pairs == sample_underspecified_prompts(200, 11)
    rng = np.random.default_rng(11)
    images = [render(scene, 64, rng) for _, scene in pairs]
    texts = [text for text, _ in pairs]
    ev = ShapesEval()
    report = ev.evaluate_many(images, texts)
    assert report.whole_prompt >= 0.99, [(t, s.detected) for t, s in zip(texts, report.scores) if not s.correct][:3]

    kinds = Counter()
    for text, scene in pairs:
        spec = parse_caption(text)
        assert not spec.complete, text  # something is always left open
        assert len(spec.objects) == len(scene.objects), text
        stated = [frozenset(a for a in ("colour", "shape", "position", "size") if getattr(o, a)) for o in spec.objects]
        if len(stated) == 1:
            kinds[(stated[0], spec.background is not None)] += 1
        else:
            assert all(len(s) == 3 and {"colour", "shape"} & s for s in stated), text
    assert set(kinds) == set(UNDERSPECIFIED_KINDS), set(UNDERSPECIFIED_KINDS) - set(kinds)
    assert sum(kinds.values()) < len(pairs)  # some two-object prompts

    training_words = {w for f in TRAINING_FRAMES for w in re.findall(r"[a-z]+", f)}
    new_words = {w for f in EVALUATION_FRAMES for w in re.findall(r"[a-z]+", f)} - training_words
    assert new_words
    framed = [t for t in texts if new_words & set(re.findall(r"[a-z]+", t))]
    assert len(framed) >= len(texts) // 5, len(framed)

    # Each image against the next prompt: wrong almost always.
    shifted = ev.evaluate_many(images[1:], texts[:-1])
    assert shifted.whole_prompt < 0.5, shifted.whole_prompt


def _diversity_renders(seed: int, position: str | None = None, background: str | None = None) -> list:
    """32 ground-truth renders per DIVERSITY_PROMPT, drawing what each prompt leaves open the way
    the world draws it (or fixing ``position`` / ``background``)."""
    rng = np.random.default_rng(seed)
    out = []
    for prompt in DIVERSITY_PROMPTS:
        o = parse_caption(prompt).objects[0]
        backgrounds = world_distribution("background", o.colour)
        batch = []
        for _ in range(32):
            bg = background or str(rng.choice(list(backgrounds), p=list(backgrounds.values())))
            where = position or str(rng.choice(list(POSITIONS)))
            spec = ShapeSpec(o.shape, o.colour, where, str(rng.choice(SIZES)))
            batch.append(render(Scene(bg, (spec,)), 64, rng))
        out.append(batch)
    return out


def test_diversity_ground_truth_and_collapsed_generators():
    from loom.evaluation import diversity_of

    for prompt in DIVERSITY_PROMPTS:
        spec = parse_caption(prompt)
        assert len(spec.objects) == 1 and spec.background is None
        o = spec.objects[0]
        assert o.colour and o.shape and o.position is None and o.size is None, prompt
    truth = diversity_of(_diversity_renders(0), DIVERSITY_PROMPTS)
    assert truth["prompts"] == len(DIVERSITY_PROMPTS) and truth["seeds"] == 32
    assert set(truth["per_attribute"]) == {"position", "size", "background"}
    assert truth["diversity"] >= 0.95, truth

    centred = diversity_of(_diversity_renders(0, position="center"), DIVERSITY_PROMPTS)
    assert centred["per_attribute"]["position"] <= 0.2 and centred["diversity"] <= 0.2, centred
    assert centred["per_attribute"]["size"] >= 0.9, centred
    one_bg = diversity_of(_diversity_renders(0, background="black"), DIVERSITY_PROMPTS)
    assert one_bg["per_attribute"]["background"] <= 0.05 and one_bg["diversity"] <= 0.05, one_bg
    assert one_bg["per_attribute"]["position"] >= 0.9, one_bg


def test_extra_object_makes_a_prompt_wrong():
    ev = ShapesEval()
    rng = np.random.default_rng(12)
    for two in scenes(20, seed=12, two_object_prob=1.0):
        one = Scene(two.background, two.objects[:1])
        o = one.objects[0]
        for prompt in (
            caption(one, rng),
            f"a {o.colour} {o.shape}",
            f"a {o.size} {o.shape} on a {one.background} background",
        ):
            right = ev.evaluate(render(one, 64, rng), prompt)
            assert right.correct and right.extra == 0, (prompt, right.detected)
            crowded = ev.evaluate(render(two, 64, rng), prompt)
            assert not crowded.correct and crowded.extra == 1, (prompt, two, crowded.detected)
            # What was asked for is there and right; only the extra object makes it wrong.
            assert all(v is not False for v in crowded.attributes.values()), (prompt, crowded.detected)


# ------------------------------------------------------------------ controls and the report


@pytest.mark.slow
def test_prompt_ignoring_generator_scores_near_chance():
    ev = ShapesEval()
    templated = [text for text, _ in sample_prompts(200, 5)]
    underspecified = [text for text, _ in sample_underspecified_prompts(200, 5)]
    # The best of 30 fixed one-object scenes scores 0.065 on the underspecified split (chance 0.049).
    for seed in range(3):
        image = render(sample_scene(np.random.default_rng(seed), 0.0), 64)
        a = ev.evaluate_many([image] * len(templated), templated)
        assert a.whole_prompt <= 0.02, (a.whole_prompt, a.chance["whole_prompt"])
        b = ev.evaluate_many([image] * len(underspecified), underspecified)
        assert b.whole_prompt <= 0.15, (b.whole_prompt, b.chance["whole_prompt"])
        assert b.chance["whole_prompt"] > a.chance["whole_prompt"]


def test_subset_rate_and_shapes_prompts():
    from loom.core import InputError
    from loom.evaluation import shapes_prompts, subset_rate

    pairs = sample_prompts(20, 3)
    rng = np.random.default_rng(3)
    images = [render(s, 64, rng) for _, s in pairs[:10]] + [render(s, 64, rng) for _, s in pairs[11:] + pairs[:1]]
    report = ShapesEval().evaluate_many(images, [t for t, _ in pairs])
    correct = [s.correct for s in report.scores]
    assert correct[:10] == [True] * 10 and not any(correct[10:])
    assert subset_rate(report, lambda s: True) == {"n": 20, "whole_prompt": 0.5}
    one = subset_rate(report, lambda s: s.objects == 1)
    two = subset_rate(report, lambda s: s.objects == 2)
    assert one["n"] + two["n"] == 20
    assert one["whole_prompt"] == pytest.approx(
        sum(c for c, s in zip(correct, report.scores) if s.objects == 1) / one["n"]
    )
    assert subset_rate(report, lambda s: False) == {"n": 0, "whole_prompt": None}

    assert shapes_prompts(30, 4) == sample_prompts(30, 4)
    assert shapes_prompts(30, 4, split="underspecified") == sample_underspecified_prompts(30, 4)
    assert shapes_prompts(10, 4, combinations="unseen") == sample_prompts(10, 4, combinations="unseen")
    with pytest.raises(InputError, match="split"):
        shapes_prompts(5, 4, split="everyday")


@pytest.fixture(scope="module")
def untrained_vae(tmp_path_factory):
    import loom

    out = tmp_path_factory.mktemp("untrained") / "u"
    return loom.train("vae", steps=1, pool=64, out=out, options={"batch_size": 8}, progress=False)


@pytest.mark.slow
def test_untrained_generator_scores_near_chance(untrained_vae):
    from loom.evaluation import evaluate_shapes

    # Measured: 0.0 on both splits (chance 0.0001 and 0.02).
    for split in ("templated", "underspecified"):
        report = evaluate_shapes(str(untrained_vae), n=40, progress=False, split=split)
        assert report.n == 40
        assert report.whole_prompt <= 0.1, (split, report.whole_prompt, report.chance["whole_prompt"])


@pytest.mark.slow
def test_shapes_report_layout(untrained_vae):
    from loom.evaluation import shapes_report

    n = 8
    report = shapes_report(str(untrained_vae), n=n, progress=False, diversity_seeds=4)
    json.dumps(report)
    assert report["n"] == n
    for split in ("templated", "underspecified"):
        part = report[split]
        assert part["n"] == n and 0.0 <= part["whole_prompt"] <= 1.0
        assert set(ATTRIBUTES) <= set(part["per_attribute"]) and "whole_prompt" in part["chance"]
        for key in ("one_object", "two_objects", "seen", "unseen"):
            assert set(part[key]) == {"n", "whole_prompt"}, (split, key)
            assert part[key]["whole_prompt"] is None or 0.0 <= part[key]["whole_prompt"] <= 1.0
        assert part["one_object"]["n"] + part["two_objects"]["n"] == n
        assert 0 <= part["seen"]["n"] <= n
        assert part["unseen"]["n"] == n // 2
    diversity = report["diversity"]
    assert diversity["prompts"] == len(DIVERSITY_PROMPTS) and diversity["seeds"] == 4
    assert set(diversity["per_attribute"]) == {"position", "size", "background"}
    assert diversity["diversity"] == min(diversity["per_attribute"].values())


@pytest.mark.parametrize("sample", [sample_prompts, sample_underspecified_prompts])
def test_seen_and_unseen_splits_hold_one_and_two_objects_in_the_same_mix(sample):
    """Seen against unseen compares combinations, not how many prompts have two objects (whole
    draws kept when they pass made the unseen templated split 69% two-object, the seen one 44%)."""
    share = {
        c: sum(len(s.objects) == 2 for _, s in sample(400, 11, combinations=c)) / 400 for c in ("any", "seen", "unseen")
    }
    assert abs(share["seen"] - share["any"]) < 0.07 and abs(share["unseen"] - share["any"]) < 0.07, share
    unseen = sample(50, 11, combinations="unseen")
    assert all(any(map(is_held_out, parse_caption(t).objects)) for t, _ in unseen)
