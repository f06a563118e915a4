import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fakes import Invert, fake_plugin

from loom.core import Pipeline, PluginError, Registry, UnknownComponentError, discover, hookimpl

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {
    "text-encoder": ["text-encoder"],
    "vae": ["vae", "vae-sound"],
    "gan": ["gan", "gan-sound"],
    "ar": ["ar"],
    "image-postprocessors": ["resize"],
    "audio-postprocessors": ["resample", "loudness", "trim", "fade"],
    "prompt-completion": ["complete-shapes-prompt", "complete-sounds-prompt"],
}


def test_first_party_plugins_come_from_entry_points():
    registry = discover(env={})
    for name, components in FIRST_PARTY.items():
        info = registry.plugins[name]
        assert info.ok, info.errors
        assert info.distribution == "loom" and info.version
        assert info.components == components
    assert registry.get("vae").plugin == "vae"
    assert registry.get("image-postprocessors:resize").name == "resize"


def write_dist(root: Path, name: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """A minimal installed distribution on a sys.path entry: dist-info + modules."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[loom]\n{lines}\n")
    for mod, source in modules.items():
        (root / f"{mod}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def broken_plugins(tmp_path, monkeypatch):
    write_dist(
        tmp_path,
        "broken-loom-plugin",
        "0.3",
        {"broken-import": "broken_import_plugin", "bad-register": "bad_register_plugin"},
        {
            "broken_import_plugin": "import missing_dependency_xyz\n",
            "bad_register_plugin": """
                import loom

                class NotAComponent:
                    pass

                @loom.hookimpl
                def loom_register_components(register):
                    register("oops", NotAComponent)
            """,
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_broken_plugins_are_reported_and_the_rest_work(broken_plugins):
    registry = discover(env={})
    broken = registry.plugins["broken-import"]
    assert not broken.ok
    assert broken.distribution == "broken-loom-plugin" and broken.version == "0.3"
    assert "import failed: ModuleNotFoundError" in broken.errors[0] and "missing_dependency_xyz" in broken.errors[0]
    bad = registry.plugins["bad-register"]
    assert not bad.ok and "is not an Encoder, Generator or Postprocessor" in bad.errors[0]
    for name in FIRST_PARTY:
        assert registry.plugins[name].ok
    Pipeline.from_spec(
        {"steps": [{"component": "text-encoder"}, {"component": "vae"}, {"component": "resize"}]}, registry
    )
    with pytest.raises(UnknownComponentError, match="plugins that failed to load: broken-import, bad-register"):
        registry.get("oops")


def test_cli_lists_failures_and_imports_no_torch(broken_plugins):
    env = {**os.environ, "PYTHONPATH": str(broken_plugins)}
    code = (
        "import sys\nfrom loom.cli import main\n"
        "try:\n    main(['plugins'])\nexcept SystemExit as e:\n    code = e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert "broken-import (broken-loom-plugin 0.3): FAILED" in out.stdout
    assert "missing_dependency_xyz" in out.stdout
    assert "vae (loom" in out.stdout and "Embedding → Image" in out.stdout
    assert out.stdout.strip().endswith("NO-TORCH 0"), out.stdout + out.stderr


def test_env_var_restricts_plugins():
    registry = discover(env={"LOOM_PLUGINS": "vae, image-postprocessors"})
    assert set(registry.plugins) == {"vae", "image-postprocessors"}
    assert discover(env={"LOOM_PLUGINS": ""}).plugins == {}


def test_name_clash_warns_and_qualified_names_pick_either():
    registry = Registry()
    registry.add_plugin(fake_plugin(), "fakes")

    class Other:
        @hookimpl
        def loom_register_components(self, register):
            register("invert", Invert)

    with pytest.warns(UserWarning, match="'invert' is registered by plugins \\['fakes', 'other'\\]"):
        registry.add_plugin(Other(), "other")
    with pytest.raises(UnknownComponentError, match="several plugins; name one of: fakes:invert, other:invert"):
        registry.get("invert")
    assert registry.get("other:invert").plugin == "other"
    assert registry.get("fakes:invert").plugin == "fakes"


def test_register_validates_names():
    registry = Registry()

    class BadName:
        @hookimpl
        def loom_register_components(self, register):
            register("Bad Name", Invert)

    info = registry.add_plugin(BadName(), "badname")
    # the PluginError raised inside the hook is caught and recorded against the plugin, by name
    assert not info.ok and len(info.errors) == 1
    assert info.errors[0].startswith(
        f"loom_register_components failed: {PluginError.__name__}: plugin 'badname': component name 'Bad Name'"
    ), info.errors
    assert "lower-case" in info.errors[0] and info.components == []
    # a lookup names the broken plugin, and a plugin added after it still registers and resolves
    with pytest.raises(UnknownComponentError, match="plugins that failed to load: badname"):
        registry.get("Bad Name")
    registry.add_plugin(fake_plugin(), "fakes")
    assert registry.plugins["fakes"].ok and registry.get("invert").cls is Invert


def test_names_are_matched_whole():
    """A name with a trailing newline passes a `^...$` search; it must be refused like any bad name."""

    class Newline:
        @hookimpl
        def loom_register_components(self, register):
            register("invert\n", Invert)

    info = Registry().add_plugin(Newline(), "newline")
    assert not info.ok and "component name 'invert\\n'" in info.errors[0] and info.components == []


@pytest.mark.slow
def test_example_plugin_installs_is_discovered_and_runs(tmp_path, monkeypatch):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT / "docs" / "example-plugin"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    out = subprocess.run(
        [sys.executable, "-m", "loom.cli", "plugins"],
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "example-frame (loom-example-plugin 0.1.0): ok" in out.stdout, out.stdout + out.stderr
    assert "frame" in out.stdout

    monkeypatch.syspath_prepend(str(target))
    registry = discover(env={})
    registry.add_plugin(fake_plugin(), "fakes")
    pipeline = Pipeline.from_spec(
        {
            "steps": [
                {"component": "hash-encoder"},
                {"component": "noise", "config": {"size": 16}},
                {"component": "frame", "config": {"width": 2, "colour": "black"}},
            ]
        },
        registry,
    )
    px = pipeline.run(["x", "y"], seed=3, progress=False).output.to_numpy()
    assert (px[:, :2] == 0).all() and (px[:, :, -2:] == 0).all()
    assert px[:, 4:12, 4:12].mean() > 20  # inside the frame: the generator's noise, not black
