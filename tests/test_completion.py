"""Prompt completion: a typed prompt becomes a full caption of its world that keeps every stated
attribute, draws the rest as the world does, is seeded, and passes other text unchanged; the
default chain puts it before the generators that read only full captions."""

from collections import Counter

import numpy as np
import pytest

from loom.api import default_spec
from loom.core import Text
from loom.plugins import shapes, sounds
from loom.testing import check_plugin


def stated(spec) -> list[dict]:
    return [{k: v for k, v in vars(o).items() if v is not None} for o in spec.objects]


@pytest.mark.parametrize("seed", range(3))
def test_a_completed_shapes_prompt_keeps_what_was_said_and_states_everything(seed):
    for text, _ in shapes.sample_underspecified_prompts(60, seed=seed):
        asked = shapes.parse_caption(text)
        full = shapes.world.complete_prompt(text, np.random.default_rng(seed))
        got = shapes.parse_caption(full)
        assert got.complete, (text, full)
        assert asked.background in (None, got.background), (text, full)
        for want, have in zip(stated(asked), stated(got)):
            assert want.items() <= have.items(), (text, full)


def test_what_a_shapes_prompt_leaves_open_is_spread_as_the_world_spreads_it():
    from loom.plugins.common.report import spread

    drawn = [
        shapes.parse_caption(shapes.world.complete_prompt("a red circle", np.random.default_rng(s))) for s in range(400)
    ]
    positions = [d.objects[0].position for d in drawn]
    backgrounds = [d.background for d in drawn]
    assert spread(positions, shapes.world_distribution("position")) > 0.95
    assert spread(backgrounds, shapes.world_distribution("background", "red")) > 0.95
    assert "red" not in backgrounds  # never the object's own colour
    assert set(Counter(d.objects[0].size for d in drawn)) == set(shapes.SIZES)


def test_two_completed_objects_get_their_own_cells_and_colours():
    for s in range(50):
        scene = shapes.parse_caption(shapes.world.complete_prompt("a circle and a square", np.random.default_rng(s)))
        a, b = scene.objects
        assert a.position != b.position and a.colour != b.colour
        assert scene.background not in (a.colour, b.colour)


@pytest.mark.parametrize("text", ["a dog on a skateboard", "", "hello world"])
def test_text_that_is_not_a_shapes_prompt_passes_unchanged(text):
    assert shapes.world.complete_prompt(text, np.random.default_rng(0)) == text


def test_a_completed_sounds_prompt_keeps_what_was_said_and_states_everything():
    for text, _ in sounds.sample_underspecified_prompts(60, seed=1):
        asked = sounds.parse_caption(text)
        got = sounds.parse_caption(sounds.world.complete_prompt(text, np.random.default_rng(1)))
        assert got.complete
        assert {k: v for k, v in vars(asked).items() if v is not None}.items() <= vars(got).items()
    assert sounds.world.complete_prompt("a dog barking", np.random.default_rng(0)) == "a dog barking"


def test_the_completion_components_keep_the_component_contract():
    # the kit's example prompts are Shapes captions, which the sounds completion passes unchanged
    # whatever the seed: give it prompts of its own world that leave something open
    underspecified = Text([text for text, _ in sounds.sample_underspecified_prompts(4, seed=1)])
    report = check_plugin("prompt-completion", inputs={"complete-sounds-prompt": underspecified})
    assert not report.failures and report.ran >= 10, str(report)


def test_the_default_chain_completes_prompts_only_for_generators_that_ask_for_it():
    first = {
        g: default_spec(g)["steps"][0]["component"] for g in ("vae", "gan", "ar", "diffusion", "gan-sound", "vae-sound")
    }
    assert first == {
        "vae": "complete-shapes-prompt",
        "gan": "complete-shapes-prompt",
        "ar": "text-encoder:text-encoder",
        "diffusion": "complete-shapes-prompt",
        "gan-sound": "complete-sounds-prompt",
        "vae-sound": "complete-sounds-prompt",
    }
    assert default_spec("vae", complete=False)["steps"][0]["component"] == "text-encoder:text-encoder"
    # an edit's prompt describes the image it starts from: nothing is drawn for it
    assert default_spec("diffusion", edit=True)["steps"][0]["component"] == "text-encoder:text-encoder"


def test_a_completed_prompt_is_seeded():
    from loom.core import Text, get_registry

    component = get_registry().get("complete-shapes-prompt").cls()
    prompts = Text(["a red circle"] * 6)
    once, again = component(prompts, seed=5), component(prompts, seed=5)
    assert once.items == again.items
    assert len(set(once.items)) > 1  # seeds 5..10 draw different scenes
