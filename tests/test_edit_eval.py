"""`loom eval edits` (issue 33, part 5): Shapes edit tasks (recolour, repaint, keep) drawn from their
own seed, run through the request contract (image, mask, strength) and read back by ShapesEval.
Fake editors registered here bound the scores: an oracle that draws exactly the scene its prompt
states scores 1.0 on every task, one that hands back its image keeps everything and edits nothing,
one that shifts every pixel by 3 levels edits right but keeps nothing."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import Field

from loom.cli import main
from loom.core import ComponentConfig, Generator, Image, InputError, Text, get_registry, hookimpl
from loom.evaluation import evaluate_edits
from loom.plugins.shapes import (
    KEEP_TOLERANCE,
    OBJECT_COLOURS,
    RECOLOUR_STRENGTHS,
    ShapesEval,
    cell_mask,
    change_outside,
    edit_tasks,
    parse_caption,
    render,
)


class OracleEditor(Generator):
    """Draws the scene its prompt states at the given image's size, plus ``offset`` levels everywhere."""

    class Config(ComponentConfig):
        strength: float | None = Field(None, ge=0.0, le=1.0)
        offset: int = Field(0, ge=0, le=255)

    input_type, output_type = Text, Image
    takes = {"image": Image, "mask": Image}
    optional = frozenset({"mask"})

    def run(self, inputs, generators, image, mask=None):
        import torch

        size = image.pixels.shape[-1]
        drawn = np.stack([render(parse_caption(t).to_scene(), size) for t in inputs.items]).astype(np.int16)
        shifted = np.clip(drawn + self.config.offset, 0, 255).astype(np.uint8)
        return Image(torch.from_numpy(shifted).permute(0, 3, 1, 2).float() / 255)


class Unchanged(Generator):
    """Hands back the image it was given: edits nothing."""

    class Config(ComponentConfig):
        strength: float | None = None

    input_type, output_type = Text, Image
    takes = {"image": Image, "mask": Image}
    optional = frozenset({"mask"})

    def run(self, inputs, generators, image, mask=None):
        return Image(image.pixels.clone())


@pytest.fixture
def editors(monkeypatch):
    """The installed plugins and the fake editors, as the process-wide registry; forgotten afterwards."""

    @hookimpl
    def loom_register_components(register):
        register("oracle-editor", OracleEditor)
        register("unchanged", Unchanged)

    monkeypatch.setattr("loom.core.plugins._registry", None)
    monkeypatch.setattr("loom.api._pipelines", {})
    plugin = SimpleNamespace(loom_register_components=loom_register_components, __name__="edit_fakes")
    info = get_registry().add_plugin(plugin, "edit-fakes", "edit-fakes", "0.1")
    assert info.ok, info.errors
    return get_registry()


def test_an_oracle_editor_scores_every_task_through_the_cli(editors):
    res = CliRunner().invoke(main, ["eval", "edits", "--generator", "oracle-editor", "-n", "6"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == "edits of the shapes world (generator: oracle-editor; tasks seed 20261125):"
    assert lines[1:] == [
        f"  recolour  1.000   (chance {1 / len(OBJECT_COLOURS):.3f})   6 tasks: one object's colour changed at "
        "strength 0.6–0.8; chance: 1 of 7",
        "  repaint   1.000   (chance 0.024)   6 tasks: another object in a masked cell; chance: 1 shape, colour, "
        "size of 42",
        "  keep      1.000   (chance 0.000)   6 tasks: repaints changing ≤ 2/255 outside the mask; chance: a random "
        "image's",
    ]
    data = json.loads(
        CliRunner().invoke(main, ["eval", "edits", "--generator", "oracle-editor", "-n", "2", "--json"]).output
    )
    assert [i["kind"] for i in data["items"]] == ["recolour", "recolour", "repaint", "repaint"]
    assert all(i["correct"] for i in data["items"]) and data["keep"]["mean_change"] == 0.0


def test_an_editor_that_changes_nothing_only_keeps(editors):
    data = evaluate_edits("unchanged", n=6, progress=False)
    assert (data["recolour"]["score"], data["repaint"]["score"], data["keep"]["score"]) == (0.0, 0.0, 1.0)
    assert not any(i["correct"] for i in data["items"])


def test_an_editor_that_moves_every_pixel_keeps_nothing(editors):
    data = evaluate_edits("oracle-editor", n=4, progress=False, options={"offset": 3})
    assert (data["recolour"]["score"], data["repaint"]["score"], data["keep"]["score"]) == (1.0, 1.0, 0.0)
    assert data["keep"]["mean_change"] == pytest.approx(3 / 255, abs=1e-4)


def test_tasks_are_seeded_and_change_one_object():
    tasks = edit_tasks(8, seed=5)
    assert [t.kind for t in tasks] == ["recolour"] * 8 + ["repaint"] * 8
    # each kind its own stream: fewer tasks are the first of more, another seed others
    assert edit_tasks(3, seed=5) == tasks[:3] + tasks[8:11]
    assert edit_tasks(3, seed=6) != edit_tasks(3, seed=5)
    for t in tasks:
        old, new = t.scene.objects[t.edited], t.target.objects[t.edited]
        others = [o for k, o in enumerate(t.scene.objects) if k != t.edited]
        assert [o for k, o in enumerate(t.target.objects) if k != t.edited] == others
        assert t.target.background == t.scene.background and new.position == old.position
        assert new.colour not in {old.colour, t.scene.background, *(o.colour for o in others)}
        assert ShapesEval().evaluate(render(t.target), t.prompt).correct  # the prompt states the target
        if t.kind == "recolour":
            assert (
                t.strength in RECOLOUR_STRENGTHS and t.mask() is None and (new.shape, new.size) == (old.shape, old.size)
            )
        else:
            assert t.strength is None and new.shape != old.shape
            assert (t.mask() == 255).sum() == cell_mask(old.position, t.size).sum() > 0
            # the target differs from the image only inside the masked cell: keep can be met
            assert change_outside(t, render(t.target)) == 0.0
            assert (
                change_outside(t, np.clip(render(t.target).astype(int) + 3, 0, 255).astype(np.uint8)) > KEEP_TOLERANCE
            )


def test_a_generator_that_does_not_edit_is_one_line():
    res = CliRunner().invoke(main, ["eval", "edits", "--generator", "vae", "-n", "2"])
    assert res.exit_code == 1
    assert res.output == (
        "error: generator 'vae' does not edit images (its chain takes no image and no mask): "
        "`loom eval edits` scores generators whose steps take an image and a mask, such as 'diffusion'\n"
    )
    with pytest.raises(InputError, match=r"^world 'sounds' has no edit tasks; worlds with edit tasks: shapes$"):
        evaluate_edits("gan-sound", n=2, world="sounds", progress=False)
