"""Training data from a folder of images with a caption each. A world's own training data
(Shapes, Sounds, a third party's) comes from its plugin: ``get_registry().world(name).training_data(...)``.

A folder is read the way Hugging Face's ``imagefolder`` reads it: a ``metadata.jsonl`` with
``file_name`` and ``text`` on each line, or else one same-name ``.txt`` caption per image. Every
file is checked before training starts, so bad data fails in seconds and names the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from loom.core import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class FolderData:
    """Images and captions from ``folder``, center-cropped and resized to ``image_size``, held in memory."""

    def __init__(self, folder: "str | Path", image_size: int):
        self.folder = Path(folder)
        self.image_size = image_size
        pairs = read_captioned_folder(self.folder)
        self.files = [p for p, _ in pairs]
        self.captions = [c for _, c in pairs]
        self.pixels = np.stack([load_image(p, image_size) for p in self.files])

    def describe(self) -> dict:
        return {"data": str(self.folder.resolve()), "images": len(self.files)}

    def __len__(self) -> int:
        return len(self.files)

    def images(self, idx: list[int], rng: np.random.Generator) -> np.ndarray:
        return self.pixels[idx]

    def sample_prompts(self) -> list[str]:
        return self.captions[:8]


def read_captioned_folder(folder: Path) -> list[tuple[Path, str]]:
    """(image path, caption) for every image in ``folder``, or an InputError naming the bad file."""
    if not folder.is_dir():
        raise InputError(f"training data {str(folder)!r} is not a folder (give --data shapes or a folder of images)")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    metadata = folder / "metadata.jsonl"
    if metadata.is_file():
        pairs = []
        for n, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                name, text = entry["file_name"], entry["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(f"{metadata}: line {n} is not a JSON object with 'file_name' and 'text'") from None
            path = folder / name
            if not path.is_file():
                raise InputError(f"{metadata}: line {n} names {name!r}, which is not in {str(folder)!r}")
            if not str(text).strip():
                raise InputError(f"{metadata}: line {n} gives {name!r} an empty caption")
            pairs.append((path, str(text).strip()))
        listed = {p for p, _ in pairs}
        missing = [p.name for p in images if p not in listed]
        if missing:
            raise InputError(f"{missing[0]!r} in {str(folder)!r} has no caption: metadata.jsonl does not list it")
    else:
        pairs = []
        for path in images:
            txt = path.with_suffix(".txt")
            if not txt.is_file():
                raise InputError(
                    f"{str(path)!r} has no caption: add {txt.name} beside it, or a metadata.jsonl with file_name and text"
                )
            text = txt.read_text(encoding="utf-8").strip()
            if not text:
                raise InputError(f"caption file {str(txt)!r} is empty")
            pairs.append((path, text))
    if not pairs:
        raise InputError(
            f"training data folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}) with captions"
        )
    return pairs


def load_image(path: Path, size: int) -> np.ndarray:
    """``path`` as size×size×3 uint8: the largest center square, resized; an InputError if unreadable."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.load()  # decodes fully, so a truncated file fails here and not mid-training
            im = ImageOps.fit(im.convert("RGB"), (size, size), Image.Resampling.BICUBIC)
    except Exception as err:  # PIL raises several unrelated types for broken files
        raise InputError(f"cannot read image {str(path)!r}: {err}") from None
    return np.asarray(im, dtype=np.uint8)
