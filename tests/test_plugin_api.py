"""The plugin API's version: plugins state the API they were written for, Loom refuses (by name)
those it cannot serve and loads the rest, the recorded signatures hold it to its promise, and
`loom plugins --check` reports versions, requirement conflicts and name clashes without torch."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakes import Invert, fake_plugin
from test_discovery import FIRST_PARTY, write_dist

from loom.core import PLUGIN_API, Registry, World, discover, hookimpl, hookspecs
from loom.core.plugins import api_problem

#: The plugin API's signatures, recorded for each version. After a compatible addition (a hook,
#: a hook argument, a data field, a World attribute, a name loom.core exports), bump PLUGIN_API's minor version and record the new surface:
#:   python -c "import json, sys; sys.path.insert(0, 'tests'); from test_plugin_api import api_surface; print(json.dumps(api_surface()))"
RECORDED = Path(__file__).with_name("plugin_api.json")


def api_surface() -> dict:
    """The plugin API's signatures, as plugins rely on them: each hook's arguments, each data
    type's fields, and the names a component or world subclass defines or uses. Recorded per API version
    by Loom's test suite, which fails on a removal or rename without a major version bump."""
    import dataclasses
    import inspect

    from loom.core.component import Component
    from loom.core.data import DATA_TYPES

    hooks = {
        name: list(inspect.signature(getattr(hookspecs, name)).parameters)
        for name in dir(hookspecs)
        if name.startswith("loom_")
    }
    data = {kind: [f.name for f in dataclasses.fields(t)] for kind, t in DATA_TYPES.items()}
    component = sorted(n for n in vars(Component) if not n.startswith("_") or n == "__call__")
    world = sorted(n for n in vars(World) if not n.startswith("_"))
    import loom.core

    exports = sorted(loom.core.__all__)
    return {"hooks": hooks, "data": data, "component": component, "world": world, "core": exports}


def test_hook_specs_change_only_compatibly_within_a_major_version():
    recorded = json.loads(RECORDED.read_text())
    current = api_surface()
    major = PLUGIN_API.split(".")[0]
    broken = []
    for version, surface in recorded.items():
        if version.split(".")[0] != major:
            continue  # a major bump may remove what older majors had
        for hook, args in surface["hooks"].items():
            if hook not in current["hooks"]:
                broken.append(f"hook {hook} (in API {version}) was removed")
            else:
                broken += [
                    f"hook {hook} lost argument {a!r} (in API {version})"
                    for a in args
                    if a not in current["hooks"][hook]
                ]
        for kind, names in surface["data"].items():
            have = current["data"].get(kind, [])
            broken += [f"data type {kind} lost field {n!r} (in API {version})" for n in names if n not in have]
        broken += [
            f"Component lost {n!r} (in API {version})" for n in surface["component"] if n not in current["component"]
        ]
        broken += [
            f"World lost {n!r} (in API {version})" for n in surface.get("world", []) if n not in current["world"]
        ]
        broken += [
            f"loom.core lost {n!r} (in API {version})" for n in surface.get("core", []) if n not in current["core"]
        ]
    assert not broken, (
        f"incompatible plugin API change without a major version bump (PLUGIN_API is {PLUGIN_API}): {'; '.join(broken)}. "
        "Keep the old names (deprecate them with a warning first) or bump the major version."
    )
    assert recorded.get(PLUGIN_API) == current, (
        f"the plugin API changed but {RECORDED.name} holds no record of it for version {PLUGIN_API}: "
        "bump PLUGIN_API's minor version (additions) and record the new surface"
    )


def test_the_snapshot_test_catches_a_renamed_argument(monkeypatch):
    from loom.core import hookspecs

    def loom_step_end(pipeline, step, position, output, seconds):  # 'index' renamed
        """renamed"""

    monkeypatch.setattr(hookspecs, "loom_step_end", loom_step_end)
    with pytest.raises(AssertionError, match="hook loom_step_end lost argument 'index'"):
        test_hook_specs_change_only_compatibly_within_a_major_version()


def test_api_versions_are_served_by_major_and_minor():
    assert api_problem("1.0", "1.0") is None
    assert api_problem("1.0", "1.3") is None
    assert "newer than the plugin API 1.0" in api_problem("1.2", "1.0")
    assert "written for Loom plugin API 2.0, but this Loom offers plugin API 1.0" in api_problem("2.0", "1.0")
    assert "is not a version like '1.0'" in api_problem("one", "1.0")


def hooks(api: str | None = None, component: str = "future-invert"):
    @hookimpl
    def loom_register_components(register):
        register(component, Invert)

    plugin = SimpleNamespace(loom_register_components=loom_register_components, __name__="future_plugin")
    if api is not None:
        plugin.LOOM_PLUGIN_API = api
    return plugin


def test_a_plugin_for_another_api_is_refused_by_name_and_the_rest_load():
    registry = Registry()
    registry.add_plugin(fake_plugin(), "fakes")
    info = registry.add_plugin(hooks("2.0"), "future", "loom-future", "3.1")
    assert not info.ok and info.components == [] and info.api == "2.0"
    assert info.errors == [
        "plugin 'future' (loom-future 3.1) was not loaded: it was written for Loom plugin API 2.0, "
        f"but this Loom offers plugin API {PLUGIN_API}"
    ]
    assert registry.get("invert").plugin == "fakes"
    ok = registry.add_plugin(hooks("1.0", "current-invert"), "current")
    assert ok.ok and ok.api == "1.0" and registry.get("current-invert").plugin == "current"
    undeclared = registry.add_plugin(hooks(None, "old-invert"), "old")
    assert undeclared.ok and undeclared.api is None


@pytest.fixture
def troubled_plugins(tmp_path, monkeypatch):
    """Installed plugins: one for a future API, one that pins another torch, and one that
    registers a name the example plugin also registers."""
    write_dist(
        tmp_path,
        "loom-future",
        "3.1",
        {"future": "future_plugin"},
        {
            "future_plugin": """
        import loom
        LOOM_PLUGIN_API = "2.0"

        @loom.hookimpl
        def loom_register_components(register):
            raise AssertionError("a refused plugin is never asked to register")
    """
        },
    )
    write_dist(
        tmp_path,
        "loom-old-torch",
        "0.2",
        {"old-torch": "old_torch_plugin"},
        {
            "old_torch_plugin": """
        import loom
        from loom.core import Image, Postprocessor
        LOOM_PLUGIN_API = "1.0"

        class Resize(Postprocessor):
            input_type = Image
            output_type = Image

        @loom.hookimpl
        def loom_register_components(register):
            register("resize", Resize)
    """
        },
    )
    metadata = tmp_path / "loom_old_torch-0.2.dist-info" / "METADATA"
    metadata.write_text(
        metadata.read_text() + "Requires-Dist: torch==1.13.1\nRequires-Dist: not-installed-xyz>=1\n"
        'Requires-Dist: pytest; extra == "test"\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_discovery_refuses_the_future_plugin_and_loads_every_other(troubled_plugins):
    with pytest.warns(UserWarning, match="'resize' is registered by plugins"):
        registry = discover(env={})
    assert "was written for Loom plugin API 2.0" in registry.plugins["future"].errors[0]
    assert "(loom-future 3.1)" in registry.plugins["future"].errors[0]
    for name in FIRST_PARTY:
        assert registry.plugins[name].ok
    resizes = sorted(e.qualified_name for e in registry.components() if e.name == "resize")
    assert resizes == ["image-postprocessors:resize", "old-torch:resize"]
    assert registry.get("old-torch:resize").plugin == "old-torch"


def test_plugins_check_reports_versions_conflicts_and_clashes_without_torch(troubled_plugins):
    env = {**os.environ, "PYTHONPATH": str(troubled_plugins)}
    code = (
        "import sys, warnings\nwarnings.simplefilter('ignore')\nfrom loom.cli import main\n"
        "try:\n    main(['plugins', '--check'])\nexcept SystemExit as e:\n    code = e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    text = out.stdout
    assert f"offers plugin API {PLUGIN_API}" in text
    assert "future (loom-future 3.1): FAILED" in text and "written for Loom plugin API 2.0" in text
    assert "old-torch (loom-old-torch 0.2): ok\n  plugin API: 1.0\n" in text
    assert "needs torch==1.13.1, but torch " in text and "needs not-installed-xyz>=1, which is not installed" in text
    assert "pytest" not in text  # an extra's requirement is not a conflict
    assert "text-encoder (loom 0.1.0): ok\n  plugin API: 1.4\n  requirements: met" in text
    assert "note: several plugins register 'resize'; name one of image-postprocessors:resize, old-torch:resize" in text
    assert text.strip().endswith("NO-TORCH 1"), text + out.stderr
