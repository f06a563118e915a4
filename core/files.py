"""Atomic writes: a file with its final name is always whole (weights, configs, outputs). Which data type
becomes which file, with its provenance record, is the SDK's table of outputs, :mod:`loom.outputs`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError, LoomError


@contextmanager
def atomic_path(path: "str | Path") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on any error it is
    removed, so ``path`` is never half-written. A failed write (disk full, no permission) is an InputError."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"output path {str(path)!r} is a folder; give a file name such as {str(path / 'out.png')!r}")
    if not path.parent.exists():
        raise InputError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist")
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        umask = os.umask(0)  # mkstemp (and some writers, e.g. safetensors) make the file private; undo that
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as err:
        # libsndfile, safetensors and torch report a full disk in errors of their own types, not OSError
        full = isinstance(err, Exception) and shutil.disk_usage(path.parent).free < 2**20
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, LoomError) or not (full or isinstance(err, OSError)):
            raise
        cause = "the disk is full): free some space or" if full else f"{getattr(err, 'strerror', None) or err}):"
        raise InputError(f"cannot write {str(path)!r} ({cause} write somewhere else") from None


def write_json_atomic(path: "str | Path", data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file, so a reader never sees half of it."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
