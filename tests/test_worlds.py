"""Worlds are plugins: Shapes and Sounds come from entry points like any plugin, and a third
party's world (tests/dot_world.py) registered the same way trains a family through `loom train
--data` and grades it through `loom eval`, with no change to Loom."""

import json

import dot_world
import numpy as np
import pytest
from click.testing import CliRunner
from fakes import Invert

from loom.cli import main
from loom.core import InputError, PluginError, Registry, UnknownWorldError, World, discover, get_registry, hookimpl


@pytest.fixture
def dot(monkeypatch):
    """The installed plugins and the dot world, as the process-wide registry; forgotten afterwards."""
    monkeypatch.setattr("loom.core.plugins._registry", None)
    info = get_registry().add_plugin(dot_world, "dot", "loom-dot", "0.1")
    assert info.ok and info.worlds == ["dot"], info.errors
    return get_registry()


def test_loom_worlds_come_from_entry_points_and_import_no_torch():
    registry = discover(env={})
    assert registry.plugins["shapes"].worlds == ["shapes"] and registry.plugins["shapes"].api == "1.3"
    assert registry.plugins["sounds"].worlds == ["sounds"]
    assert {n: (w.modality, w.checker) for n, w in registry.worlds().items()} == {
        "shapes": ("images", "ShapesEval"),
        "sounds": ("sounds", "SoundsEval"),
    }
    assert list(discover(env={"LOOM_PLUGINS": "vae"}).worlds()) == []


def test_an_unknown_world_is_one_clear_line(dot):
    with pytest.raises(
        UnknownWorldError,
        match=r"^no world named 'dots' \(did you mean 'dot'\?\); registered worlds: dot, shapes, sounds",
    ):
        dot.world("dots")
    with pytest.raises(UnknownWorldError, match="registered worlds: none"):
        Registry().world("shapes")
    res = CliRunner().invoke(main, ["eval", "nowhere", "-n", "2"])
    assert res.exit_code == 1
    assert (
        res.output == "error: no world named 'nowhere'; registered worlds: dot, shapes, sounds (run `loom plugins`)\n"
    )


def test_a_world_is_checked_when_registered():
    class Nameless(World):
        name = "No Name"

    class Smell(World):
        name = "smell"
        modality = "smells"

    def plugin(*worlds):
        class Plugin:
            @hookimpl
            def loom_register_worlds(self, register):
                for w in worlds:
                    register(w)

        return Plugin()

    registry = Registry()
    assert registry.add_plugin(dot_world, "dot").ok
    assert "world name 'No Name' must be lower-case" in registry.add_plugin(plugin(Nameless()), "a").errors[0]
    assert "modality 'smells'; use one of images, sounds" in registry.add_plugin(plugin(Smell()), "b").errors[0]
    assert "is not a loom.core.World instance" in registry.add_plugin(plugin(Invert), "c").errors[0]
    again = registry.add_plugin(plugin(dot_world.DotWorld()), "d")
    assert again.errors == [
        "loom_register_worlds failed: PluginError: plugin 'd': world 'dot' is already registered by plugin 'dot'"
    ]
    assert registry.world("dot") is not None and list(registry.worlds()) == ["dot"]
    # each refusal is a PluginError recorded against its own plugin, which keeps no world
    for name in "abcd":
        info = registry.plugins[name]
        assert info.errors[0].startswith(f"loom_register_worlds failed: {PluginError.__name__}: plugin '{name}'")
        assert not info.ok and info.worlds == []
    assert registry.plugins["dot"].ok and registry.plugins["dot"].worlds == ["dot"]


def test_the_dot_checker_reads_its_own_drawings():
    rng = np.random.default_rng(0)
    world = dot_world.DotWorld()
    data = world.training_data((3, 64, 64), None, seed=1)
    images = data.images(list(range(len(data))), rng)
    assert images.shape == (24, 64, 64, 3) and images.dtype == np.uint8
    assert all(world.score(im, text).correct for im, text in zip(images, data.captions))
    assert not world.score(dot_world.draw("red", 64, rng), "a blue dot").correct


def test_families_and_worlds_must_fit(dot, tmp_path):
    from loom.training import trainer_class, training_data

    with pytest.raises(InputError, match=r"'vae-sound' trains on sounds: give --data sounds \(got --data 'dot'\)"):
        training_data("vae-sound", trainer_class("vae-sound"), "dot", None, 0)
    with pytest.raises(
        InputError, match=r"'vae' trains on images \(--data dot or shapes or a folder of captioned images\), not sounds"
    ):
        training_data("vae", trainer_class("vae"), "sounds", None, 0)
    assert training_data("vae", trainer_class("vae"), "dot", 6, 0).describe() == {
        "data": "dot",
        "pool": 6,
        "data_seed": 0,
    }


@pytest.mark.slow
def test_a_plugins_world_trains_a_family_and_grades_it_through_the_cli(dot, tmp_path):
    out = tmp_path / "dot-vae"
    res = CliRunner().invoke(
        main, ["train", "vae", "--data", "dot", "--steps", "3", "--batch-size", "4", "--out", str(out), "-q"]
    )
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    assert config["family"] == "vae" and config["training"]["data"] == {"data": "dot", "pool": 24, "data_seed": 0}

    # as typed: the vae family's prompt completion rewrites prompts into Shapes captions
    res = CliRunner().invoke(
        main, ["eval", "dot", "--generator", str(out), "--as-typed", "-n", "4", "--split", "templated", "--json"]
    )
    assert res.exit_code == 0, res.output
    scored = json.loads(res.output)
    assert (
        scored["n"] == 4 and 0.0 <= scored["whole_prompt"] <= 1.0 and scored["chance"]["colour"] == pytest.approx(1 / 3)
    )

    res = CliRunner().invoke(main, ["eval", "dot", "--generator", str(out), "--as-typed", "-n", "2"])
    assert res.exit_code == 0, res.output
    assert f"DotEval of {out}, prompts as typed\ntemplated prompts (2):\n  colour " in res.output
    assert "underspecified prompts (2):\n  colour          n/a\n  whole prompt  " in res.output
    assert "diversity of what 1 prompts leave open, 32 seeds each: " in res.output

    res = CliRunner().invoke(main, ["eval", "sounds", "--generator", str(out), "-n", "2"])
    assert (
        res.exit_code == 1
        and "gives Image, not Audio: SoundsEval scores sound generators (for image generators use `loom eval dot|shapes`)"
        in res.output
    )


def test_loom_plugins_lists_worlds(dot):
    res = CliRunner().invoke(main, ["plugins"])
    assert res.exit_code == 0, res.output
    assert "dot (loom-dot 0.1): ok\n  dot              world         images, graded by DotEval\n" in res.output
    assert "  shapes           world         images, graded by ShapesEval\n" in res.output
    assert "  sounds           world         sounds, graded by SoundsEval\n" in res.output


def test_a_snapshot_run_is_graded_by_the_world_it_trained_on(dot):
    from loom.evaluation import _run_world

    assert _run_world({"family": "vae", "training": {"data": {"data": "dot", "pool": 24}}}).name == "dot"
    assert _run_world({"family": "vae", "training": {"data": {"data": "/some/folder", "images": 4}}}).name == "shapes"
    assert _run_world({"family": "gan-sound", "training": {}}).name == "sounds"
