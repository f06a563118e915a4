"""`loom new-plugin` writes packages that install as they are, are discovered, and pass their own
conformance tests (one package per kind, as a template's own CI should)."""

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from loom.cli import main
from loom.core import PLUGIN_API, InputError
from loom.scaffold import KINDS, write_plugin


@pytest.mark.slow
def test_new_plugin_packages_install_are_discovered_and_pass_their_tests(tmp_path):
    runner = CliRunner()
    folders = []
    for kind in KINDS:
        result = runner.invoke(main, ["new-plugin", f"my-{kind}", "--kind", kind, str(tmp_path / kind)])
        assert result.exit_code == 0, result.output
        folders.append(tmp_path / kind)
    site = tmp_path / "site"
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
            str(site),
            *map(str, folders),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    listing = subprocess.run(
        [sys.executable, "-m", "loom.cli", "plugins", "--check"], env=env, capture_output=True, text=True, timeout=120
    )
    for kind, types in [
        ("encoder", "Text → Embedding"),
        ("generator", "Embedding → Image"),
        ("postprocessor", "Image → Image"),
    ]:
        assert (
            f"my-{kind} (loom-my-{kind} 0.1.0): ok\n  plugin API: {PLUGIN_API}\n  requirements: met\n  my-{kind}"
            in listing.stdout
        ), listing.stdout + listing.stderr
        assert types in listing.stdout

    # the packages' own tests, as their authors run them, against the installed packages
    tests = [str(f / "tests") for f in folders]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    # per package, one component: "registers" and every check of the kit, the weights round trip
    # skipped (a new plugin has no weights); the templates add no tests of their own
    from loom.testing import CHECKS

    items, skipped = len(KINDS) * (1 + len(CHECKS)), len(KINDS)
    assert f"{items - skipped} passed, {skipped} skipped" in out.stdout
    assert (
        f"loom conformance: {len(KINDS)} component(s), {items} checks: {items - skipped} passed, 0 failed, "
        f"{skipped} skipped" in out.stdout
    )


def test_new_plugin_refuses_bad_names_and_full_folders(tmp_path):
    with pytest.raises(InputError, match="lower-case"):
        write_plugin("My Plugin", directory=tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="already exists and is not empty"):
        write_plugin("blur", directory=tmp_path / "full")
    folder = write_plugin("loom-blur", "postprocessor", tmp_path / "blur")
    assert (folder / "loom_blur" / "__init__.py").is_file()
    text = (folder / "pyproject.toml").read_text()
    assert 'blur = "loom_blur"' in text and "[project.entry-points.loom]" in text and f"plugin API {PLUGIN_API}" in text
    assert f'LOOM_PLUGIN_API = "{PLUGIN_API}"' in (folder / "loom_blur" / "__init__.py").read_text()
