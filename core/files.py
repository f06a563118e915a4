"""Writing outputs atomically, with their provenance record embedded."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import InputError, ProvenanceError

#: The PNG text chunk (iTXt) that holds a Loom provenance record.
PNG_RECORD_KEY = "loom"


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


def save_png(image, path: "str | Path", record: dict | None = None) -> Path:
    """Save a PIL image as PNG, atomically, with ``record`` as JSON in an iTXt chunk."""
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"cannot write {str(path)!r}: image outputs are PNG files, use a name ending in .png")
    info = PngInfo()
    if record is not None:
        info.add_itxt(PNG_RECORD_KEY, json.dumps(record, separators=(",", ":"), sort_keys=True), zip=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return path


def read_record(path: "str | Path") -> dict:
    """The provenance record embedded in a file Loom wrote."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"file {str(path)!r} does not exist")
    try:
        with Image.open(path) as im:
            text = im.text.get(PNG_RECORD_KEY) if hasattr(im, "text") else None
    except (UnidentifiedImageError, OSError) as err:
        raise ProvenanceError(f"{str(path)!r} is not an image Loom can read: {err}") from None
    if text is None:
        raise ProvenanceError(f"{str(path)!r} carries no Loom provenance record (was it written by Loom?)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ProvenanceError(f"{str(path)!r}: its Loom record is not valid JSON: {err}") from None
