"""The Sounds world (sounds, captions, parser, renderer, dataset) and its checker SoundsEval."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

from loom.plugins.sounds import (
    ATTRIBUTES,
    COUNTS,
    DURATION,
    MOTIONS,
    PITCHES,
    SAMPLE_RATE,
    TEMPLATES,
    TIMBRES,
    PartialSound,
    Sound,
    SoundsDataset,
    SoundsEval,
    analyse,
    caption,
    caption_with_template,
    layout,
    parse_caption,
    render,
    sample_prompts,
    sample_sound,
)

VALUES = {"pitch": PITCHES, "timbre": TIMBRES, "count": COUNTS, "motion": MOTIONS}


def sounds(n: int, seed: int) -> list[Sound]:
    rng = np.random.default_rng(seed)
    return [sample_sound(rng) for _ in range(n)]


def corrupt(sound: Sound, attribute: str, rng: np.random.Generator) -> Sound:
    """``sound`` with exactly ``attribute`` changed to another value."""
    others = [v for v in VALUES[attribute] if v != getattr(sound, attribute)]
    return dataclasses.replace(sound, **{attribute: others[int(rng.integers(len(others)))]})


# ------------------------------------------------------------------ sounds and captions


def test_sounds_are_validated_and_round_trip_as_dicts():
    s = Sound("low", "buzz", 2, "rising")
    assert Sound.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    for bad in ({"pitch": "loud"}, {"timbre": "violin"}, {"count": 4}, {"motion": "wobbling"}):
        with pytest.raises(ValueError, match="expected one of"):
            dataclasses.replace(s, **bad)


def test_sampling_covers_every_value_evenly():
    drawn = sounds(900, seed=1)
    for attribute, values in VALUES.items():
        counts = Counter(getattr(s, attribute) for s in drawn)
        assert set(counts) == set(values)
        assert min(counts.values()) > 900 / len(values) * 0.8, (attribute, counts)


@pytest.mark.parametrize("template", range(len(TEMPLATES)))
def test_every_template_round_trips_for_every_sound(template):
    rng = np.random.default_rng(template)
    for pitch in PITCHES:
        for timbre in TIMBRES:
            for count in COUNTS:
                for motion in MOTIONS:
                    s = Sound(pitch, timbre, count, motion)
                    for _ in range(3):  # the word choices within a template
                        text, used = caption_with_template(s, rng, template)
                        assert used == template
                        assert parse_caption(text).to_sound() == s, text


def test_captions_use_every_template_and_several_phrasings():
    rng = np.random.default_rng(2)
    s = Sound("high", "hiss", 1, "falling")
    texts = {caption(s, rng) for _ in range(200)}
    assert len({caption_with_template(s, np.random.default_rng(i))[1] for i in range(100)}) == len(TEMPLATES)
    assert len(texts) > 20
    assert "one shrill falling hiss" in {caption(s, np.random.default_rng(i), 0) for i in range(400)}


def test_free_text_parse_and_partial_prompts():
    assert parse_caption("Two LOW rising buzzes!").to_sound() == Sound("low", "buzz", 2, "rising")
    assert parse_caption("a buzzing tone, deep, three beeps, going down") == PartialSound("low", "buzz", 3, "falling")
    assert parse_caption("a hissing tone") == PartialSound(timbre="hiss")
    assert parse_caption("a high pitched whistle") == PartialSound(pitch="high", timbre="tone")
    assert parse_caption("beep twice") == PartialSound(count=2)
    with pytest.raises(ValueError, match="does not state the sound's pitch, count, motion"):
        parse_caption("a buzz").to_sound()


@pytest.mark.parametrize("text", ["", "a red circle on a blue background", "hello world"])
def test_text_without_any_attribute_raises_naming_an_example(text):
    with pytest.raises(ValueError, match="no pitch, timbre, count or motion found .*two low rising buzzes"):
        parse_caption(text)


# ------------------------------------------------------------------ rendering and the dataset


@pytest.mark.parametrize("rate", [8000, 16000, 22050])
def test_render_shape_range_and_layout(rate):
    s = Sound("medium", "buzz", 3, "steady")
    clip = render(s, rate, np.random.default_rng(0))
    assert clip.dtype == np.float32 and clip.shape == (int(round(DURATION * rate)),)
    plan = layout(s, np.random.default_rng(0))
    assert abs(float(np.abs(clip).max()) - plan.amplitude) < 1e-3 and plan.amplitude <= 0.9
    assert len(plan.beeps) == 3 and np.abs(clip[: int(plan.beeps[0].start * rate) - 1]).max() == 0
    assert np.abs(clip[int((plan.beeps[-1].start + plan.beeps[-1].seconds) * rate) + 1 :]).max() == 0


def test_render_is_canonical_without_rng_and_seeded_with_one():
    s = Sound("low", "hiss", 2, "rising")
    assert np.array_equal(render(s), render(s))
    a, b = render(s, rng=np.random.default_rng(5)), render(s, rng=np.random.default_rng(5))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render(s, rng=np.random.default_rng(6)))


def test_dataset_is_deterministic_and_indexable():
    ds = SoundsDataset(seed=3)
    a, b = ds.item(7), SoundsDataset(seed=3)[7]
    assert a.caption == b.caption and a.sound == b.sound and np.array_equal(a.waveform, b.waveform)
    assert parse_caption(a.caption).to_sound() == a.sound and a.sample_rate == SAMPLE_RATE
    assert ds.item(8).caption != a.caption or ds.item(8).sound != a.sound
    assert SoundsDataset(seed=4).item(7).waveform.tolist() != a.waveform.tolist()
    waves, captions = ds.arrays(0, 4)
    assert waves.shape == (4, int(DURATION * SAMPLE_RATE)) and len(captions) == 4
    with pytest.raises(IndexError):
        ds.item(-1)


def test_evaluation_prompts_are_fresh_and_deterministic():
    prompts = sample_prompts(50, seed=0)
    assert prompts == sample_prompts(50, seed=0) and prompts != sample_prompts(50, seed=1)
    for text, sound in prompts:
        assert parse_caption(text).to_sound() == sound
    train = [(it.caption, it.sound) for it in SoundsDataset(seed=0).batch(0, 50)]
    assert train != prompts


# ------------------------------------------------------------------ the checker


@pytest.fixture(scope="module")
def ground_truth():
    """200 fresh captions and their jittered renders at 16 kHz."""
    pairs = sample_prompts(200, seed=11)
    rng = np.random.default_rng(11)
    return [render(s, SAMPLE_RATE, rng) for _, s in pairs], [c for c, _ in pairs], [s for _, s in pairs]


def test_eval_ground_truth_scores_at_least_099_per_attribute_and_whole(ground_truth):
    clips, captions, _ = ground_truth
    report = SoundsEval().evaluate_many(clips, captions, SAMPLE_RATE)
    assert report.n == 200
    assert report.whole_prompt >= 0.99, report.per_attribute
    assert all(report.per_attribute[a] >= 0.99 for a in ATTRIBUTES), report.per_attribute
    assert report.chance["whole_prompt"] == pytest.approx(1 / 81)
    assert all(report.chance[a] == pytest.approx(1 / 3) for a in ATTRIBUTES)
    json.dumps(report.to_dict(include_scores=True))


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_eval_flags_exactly_the_changed_attribute(attribute):
    rng = np.random.default_rng(ATTRIBUTES.index(attribute))
    evaluator = SoundsEval()
    for s in sounds(24, seed=40 + ATTRIBUTES.index(attribute)):
        wrong = corrupt(s, attribute, rng)
        score = evaluator.evaluate(render(wrong, SAMPLE_RATE, rng), s)
        assert score.attributes == {a: a != attribute for a in ATTRIBUTES}, (s, wrong, score.detected)
        assert not score.correct


def test_eval_of_mismatched_clips_is_near_chance():
    rng = np.random.default_rng(9)
    prompts, others = sounds(100, seed=9), sounds(100, seed=10)
    report = SoundsEval().evaluate_many([render(o, SAMPLE_RATE, rng) for o in others], prompts)
    assert report.whole_prompt < 0.06
    for a in ATTRIBUTES:
        assert report.per_attribute[a] < report.chance[a] + 0.15, (a, report.per_attribute)


def test_eval_accepts_any_clip_form_rate_and_prompt_form():
    import torch

    from loom.core import Audio

    s = Sound("high", "tone", 2, "falling")
    text = "two shrill falling pure tones"
    evaluator = SoundsEval()
    clip = render(s, SAMPLE_RATE, np.random.default_rng(1))
    forms = [clip, clip[None], np.stack([clip, clip]), np.stack([clip, clip]).T, torch.from_numpy(clip)[None]]
    for form in forms:
        for prompt in (text, s, parse_caption(text)):
            assert evaluator.evaluate(form, prompt, SAMPLE_RATE).correct
    audio = Audio(torch.from_numpy(clip)[None, None], SAMPLE_RATE)
    assert evaluator.evaluate(audio, s).correct
    for rate in (8000, 22050, 44100):
        assert evaluator.evaluate(render(s, rate, np.random.default_rng(2)), s, rate).correct, rate
    partial = evaluator.evaluate(clip, "two beeps", SAMPLE_RATE)
    assert partial.attributes == {"pitch": None, "timbre": None, "count": True, "motion": None} and partial.correct
    report = evaluator.evaluate_many(Audio(torch.from_numpy(np.stack([clip, clip]))[:, None], SAMPLE_RATE), [s, "three beeps"])
    assert report.n == 2 and report.whole_prompt == 0.5 and report.per_attribute["count"] == 0.5
    with pytest.raises(ValueError, match="got 1 clips for 2 prompts"):
        evaluator.evaluate_many([clip], [s, s])


def test_silence_and_noise_floor_score_nothing():
    evaluator = SoundsEval()
    silent = evaluator.evaluate(np.zeros(SAMPLE_RATE), Sound("low", "tone", 1, "steady"))
    assert silent.detected["count"] == 0 and not any(silent.attributes.values())
    quiet = evaluator.evaluate(np.full(SAMPLE_RATE, 1e-9), Sound("low", "tone", 1, "steady"))
    assert not quiet.correct


def test_analysis_reads_each_beep():
    s = Sound("low", "buzz", 3, "rising")
    found = analyse(render(s, SAMPLE_RATE, np.random.default_rng(3)), SAMPLE_RATE)
    assert (found["pitch"], found["timbre"], found["count"], found["motion"]) == ("low", "buzz", 3, "rising")
    assert len(found["beeps"]) == 3 and all(b["glide"] > 0.5 for b in found["beeps"])
    assert 200 < found["hz"] < 320


def test_eval_speed():
    pairs = sample_prompts(50, seed=12)
    rng = np.random.default_rng(12)
    clips = [render(s, SAMPLE_RATE, rng) for _, s in pairs]
    start = time.process_time()
    SoundsEval().evaluate_many(clips, [s for _, s in pairs])
    assert time.process_time() - start < 2.0  # about 0.4 s of CPU on these machines


def test_import_stays_light():
    code = (
        "import sys, loom, loom.plugins; before = set(sys.modules); import loom.plugins.sounds; "
        "heavy = {'torch', 'torchaudio', 'scipy', 'soundfile', 'transformers'}; "
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
