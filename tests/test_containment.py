"""Plugins are contained (issue 32): a plugin that exits, raises anything, or imports slowly is
named and costs nobody else their work; a third party's name never takes a first-party one."""

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from PIL import Image as PILImage
from test_discovery import write_dist

import loom.api
import loom.core.plugins
from loom.cli import main
from loom.core import Pipeline, Registry, discover, hookimpl
from loom.core.plugins import PluginWarning
from loom.testing import check_plugin

DIST = "containment-test"

#: A Text → Image generator, so a chain needs no text encoder; and a ``resize`` that must never run.
COMPONENTS = """
    import sys

    import loom
    from loom.core import Generator, Image, Postprocessor, Text


    class Flat(Generator):
        input_type = Text
        output_type = Image

        def run(self, inputs, generators):
            import torch

            return Image(torch.full((len(inputs), 3, 8, 8), 0.5))


    class NotLoomsResize(Postprocessor):
        input_type = Image
        output_type = Image

        def run(self, inputs, generators):
            raise RuntimeError("a bare 'resize' reached the third-party resize")
"""

MODULES = {
    "contain_exit_on_import": "import sys\nsys.exit(3)\n",
    "contain_exit_on_register": COMPONENTS
    + """
    @loom.hookimpl
    def loom_register_components(register):
        sys.exit(4)
""",
    "contain_exit_at_end": COMPONENTS
    + """
    @loom.hookimpl
    def loom_register_components(register):
        register("flat", Flat)


    @loom.hookimpl
    def loom_pipeline_end(result):
        sys.exit(5)
""",
    "contain_clash": COMPONENTS
    + """
    @loom.hookimpl
    def loom_register_components(register):
        register("resize", NotLoomsResize)
        register("flat-too", Flat)
""",
    "contain_slow": "import time\ntime.sleep(0.3)\n",
}


def install(tmp_path, monkeypatch, *modules: str) -> None:
    """An installed distribution holding ``modules`` as plugins (entry point = module name without
    ``contain_``, '-' for '_'), and a process registry that discovers it on first use."""
    names = {m.removeprefix("contain_").replace("_", "-"): m for m in modules}
    write_dist(tmp_path, DIST, "1.0", names, {m: MODULES[m] for m in modules})
    monkeypatch.syspath_prepend(str(tmp_path))
    for m in modules:  # a fresh import for each test
        monkeypatch.delitem(sys.modules, m, raising=False)
    monkeypatch.setattr(loom.core.plugins, "_registry", None)
    monkeypatch.setattr(loom.api, "_pipelines", {})


def test_a_plugin_exiting_on_import_or_in_registration_is_named_and_the_rest_load(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "contain_exit_on_import", "contain_exit_on_register")
    registry = discover(env={})
    on_import, on_register = registry.plugins["exit-on-import"], registry.plugins["exit-on-register"]
    assert on_import.errors[0].startswith("import failed: SystemExit: 3 (")
    assert "contain_exit_on_import.py:2" in on_import.errors[0]
    assert on_register.errors == ["loom_register_components failed: SystemExit: 4"]
    assert registry.plugins["image-postprocessors"].ok and registry.get("resize").plugin == "image-postprocessors"


def test_loom_plugins_lists_every_other_plugin_and_names_the_exiting_ones(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "contain_exit_on_import", "contain_exit_on_register")
    res = CliRunner().invoke(main, ["plugins"])
    assert res.exit_code == 0, res.output
    assert f"exit-on-import ({DIST} 1.0): FAILED" in res.stdout and "SystemExit: 3" in res.stdout
    assert f"exit-on-register ({DIST} 1.0): FAILED" in res.stdout
    assert "loom_register_components failed: SystemExit: 4" in res.stdout
    assert "vae (loom" in res.stdout and "image-postprocessors (loom" in res.stdout and "resize" in res.stdout


def test_sys_exit_in_pipeline_end_keeps_the_finished_output(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "contain_exit_at_end")
    out = tmp_path / "out.png"
    res = CliRunner().invoke(main, ["generate", "a grey square", "--generator", "flat", "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    with PILImage.open(out) as im:
        assert im.size == (256, 256)  # flat's 8×8 through Loom's resize
    assert res.stderr.count("warning: plugin 'exit-at-end' failed in loom_pipeline_end: SystemExit: 5") == 1
    assert "Traceback" not in res.output and "UserWarning" not in res.output


def test_ctrl_c_in_a_hook_still_stops_the_run():
    class Interrupted:
        @hookimpl
        def loom_pipeline_start(self):
            raise KeyboardInterrupt

    registry = Registry()
    registry.add_plugin(Interrupted(), "interrupted")
    with pytest.raises(KeyboardInterrupt):
        registry.notify("loom_pipeline_start", pipeline=None, inputs=None, seeds=[])


def test_a_clash_on_resize_keeps_generate_working_and_is_told_once(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "contain_clash")
    out = tmp_path / "out.png"
    res = CliRunner().invoke(main, ["generate", "a grey square", "--generator", "flat-too", "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert out.is_file()
    told = [line for line in res.stderr.splitlines() if "'resize'" in line]
    assert told == [
        "warning: component 'resize' is registered by plugins ['clash', 'image-postprocessors']; a bare 'resize' "
        "means Loom's own image-postprocessors:resize; name one of clash:resize, image-postprocessors:resize"
    ] or told == [
        "warning: component 'resize' is registered by plugins ['image-postprocessors', 'clash']; a bare 'resize' "
        "means Loom's own image-postprocessors:resize; name one of image-postprocessors:resize, clash:resize"
    ], res.stderr


def test_a_bare_first_party_name_means_looms_own_and_default_chains_are_qualified(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "contain_clash")
    with pytest.warns(PluginWarning, match="'resize' is registered by plugins"):
        registry = discover(env={})
    assert registry.get("resize").plugin == "image-postprocessors"
    assert registry.get("clash:resize").plugin == "clash"
    spec = {"steps": [{"component": "flat-too"}, {"component": "resize", "config": {"size": 16}}]}
    assert Pipeline.from_spec(spec, registry).run("x", seed=1, progress=False).output.pixels.shape[-1] == 16
    steps = [s["component"] for s in loom.api.default_spec("flat-too", registry=registry)["steps"]]
    assert steps == ["flat-too", "image-postprocessors:resize"]
    assert loom.api.spoken_spec("vae")["steps"][0]["component"] == "spoken-prompt:spoken-prompt"


def test_loom_plugins_tells_the_clash_once_as_a_note(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "contain_clash")
    res = CliRunner().invoke(main, ["plugins"])
    assert res.exit_code == 0, res.output
    assert "is registered by plugins" not in res.output  # no warning besides the listing's own note
    assert res.output.count("several plugins register 'resize'") == 1, res.output
    assert "note: several plugins register 'resize'; name one of clash:resize, image-postprocessors:resize; " in (
        res.stdout
    )
    assert "a bare 'resize' means Loom's own image-postprocessors:resize" in res.stdout


def test_the_kit_fails_a_plugin_that_takes_a_first_party_name(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "contain_clash")
    import contain_clash

    with pytest.warns(PluginWarning, match="'resize' is registered by plugins"):  # the kit discovers what is installed
        report = check_plugin(contain_clash, only=["data_types"])
    assert report.status("registers") == "failed"
    failure = next(r.message for r in report.failures if r.check == "registers")
    assert "its component 'resize' has the name of Loom's own image-postprocessors:resize" in failure
    assert "rename it (e.g. 'contain-clash-resize')" in failure
    assert "flat-too" not in failure  # a name of its own is fine
    assert check_plugin("image-postprocessors", only=["data_types"]).status("registers") == "passed"


def test_a_slow_import_is_named_with_its_time(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "contain_slow")
    with pytest.warns(PluginWarning, match=rf"plugin 'slow' \({DIST} 1.0\) took 0\.\d s to import") as told:
        discover(env={"LOOM_SLOW_IMPORT_S": "0.2"})
    assert len([w for w in told if "to import" in str(w.message)]) == 1
    res = CliRunner().invoke(main, ["plugins"], env={"LOOM_SLOW_IMPORT_S": "soon"})
    assert res.exit_code == 1
    assert res.stderr == "error: LOOM_SLOW_IMPORT_S='soon' is not a number of seconds, like 2.5\n"


def test_first_party_plugins_import_under_the_default_threshold():
    code = (
        "import warnings\nfrom loom.core.plugins import PluginWarning, discover\n"
        "warnings.simplefilter('error', PluginWarning)\ndiscover(env={})\nprint('fine')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LOOM_PLUGINS", "LOOM_SLOW_IMPORT_S")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "fine", out.stderr
