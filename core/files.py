"""Atomic writes: a file with its final name is always whole (weights, configs, outputs).

Which data type becomes which file, with its provenance record, is the SDK's table of outputs,
:mod:`loom.outputs`.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError


@contextmanager
def atomic_path(path: "str | Path") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on any
    error it is removed, so ``path`` is never left half-written."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"output path {str(path)!r} is a folder; give a file name such as {str(path / 'out.png')!r}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"cannot write {str(path)!r}: folder {str(parent)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp (and some writers, e.g. safetensors) make the file private; give it the usual mode
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_json_atomic(path: "str | Path", data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file, so a reader never sees half of it."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
