"""The layers hold: import-linter checks the contracts in pyproject.toml (core imports neither the
SDK nor a plugin; plugins import no SDK module; the SDK imports no plugin module by name; no import
cycles in any package), and breaks when a forbidden import is added.

Loom's folders are mapped onto one package (``loom`` → sdk/, ``loom.core`` → core/,
``loom.plugins`` → plugins/), which grimp cannot follow in an editable install, so the test lays
the package out as it is installed: a tree of links under a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _layout(tmp: Path, copy_core: bool = False) -> Path:
    """``tmp/src/loom`` as installed: links to sdk/'s entries, core/ (copied when asked) and plugins/."""
    package = tmp / "src" / "loom"
    package.mkdir(parents=True)
    for entry in (ROOT / "sdk").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    if copy_core:
        shutil.copytree(ROOT / "core", package / "core", ignore=shutil.ignore_patterns("__pycache__"))
    else:
        (package / "core").symlink_to(ROOT / "core")
    (package / "plugins").symlink_to(ROOT / "plugins")
    return tmp / "src"


def _lint(src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_contracts_hold(tmp_path):
    res = _lint(_layout(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4 kept, 0 broken" in res.stdout


def test_a_forbidden_import_breaks_them(tmp_path):
    src = _layout(tmp_path, copy_core=True)
    errors = src / "loom" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom loom.plugins import vae  # noqa: E402,F401\n")
    res = _lint(src)
    assert res.returncode != 0
    assert "core imports neither the SDK nor any plugin BROKEN" in res.stdout
    assert "loom.core.errors -> loom.plugins.vae" in res.stdout


def test_every_sdk_module_is_in_the_contracts():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    by_id = {c["id"]: c for c in config}
    modules = {f"loom.{p.stem}" for p in (ROOT / "sdk").iterdir() if p.suffix == ".py" and p.stem != "__init__"}
    modules |= {f"loom.{p.name}" for p in (ROOT / "sdk").iterdir() if (p / "__init__.py").is_file()}
    hint = "list every SDK module in pyproject.toml's import-linter contracts"
    assert set(by_id["sdk"]["source_modules"]) == modules, hint
    assert set(by_id["plugins"]["forbidden_modules"]) == modules, hint
    assert set(by_id["core"]["forbidden_modules"]) == modules | {"loom.plugins"}, hint
