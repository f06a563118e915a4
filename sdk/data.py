"""Training data: Loom's procedural Shapes, or a folder of images with a caption each; for sound
families, Loom's procedural Sounds as log-mel spectrogram "images".

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


class ShapesData:
    """``pool`` Shapes scenes with everyday captions drawn from ``seed`` (attributes left out at
    the world's rates; no held-out combination); each batch re-renders its scenes with fresh
    jitter drawn from the numpy generator the workflow passes (saved with checkpoints)."""

    def __init__(self, image_size: int, pool: int = 24000, seed: int = 0):
        from loom.plugins.shapes.world import everyday_caption, sample_training_scene

        self.image_size, self.pool, self.seed = image_size, pool, seed
        rng = np.random.default_rng(seed)
        self.scenes = [sample_training_scene(rng) for _ in range(pool)]
        self.captions = [everyday_caption(s, rng) for s in self.scenes]

    def describe(self) -> dict:
        return {"data": "shapes", "pool": self.pool, "data_seed": self.seed, "captions": "everyday"}

    def __len__(self) -> int:
        return self.pool

    def images(self, idx: list[int], rng: np.random.Generator) -> np.ndarray:
        from loom.plugins.shapes import render

        return np.stack([render(self.scenes[i], self.image_size, rng) for i in idx])

    def sample_prompts(self) -> list[str]:
        return list(SHAPES_SAMPLE_PROMPTS)


#: Prompts of the sample grid for Shapes training (fixed, so grids compare across runs).
SHAPES_SAMPLE_PROMPTS = (
    "a small red circle in the top left on a blue background",
    "a large green square in the center on a white background",
    "a large yellow triangle in the bottom right on a black background",
    "a red circle on a blue background",
    "a white circle",
    "a small white triangle at the bottom on a green background",
    "a large blue circle in the bottom left and a small yellow square in the top right on a red background",
    "a small red triangle at the top and a large white square at the bottom on a orange background",
)


class SoundsData:
    """Sounds clips ``0 .. pool-1`` of ``SoundsDataset(seed, training=True)`` (everyday captions
    leaving attributes out at the world's rates; no held-out combination), as normalised
    log-mel spectrograms of ``shape`` (1 × mels × frames, see ``loom.plugins.common.mel.MelImage``),
    computed once and held in memory as uint8 (steps of 120 dB / 255 = 0.47 dB, far below what
    SoundsEval or an ear notices: 12,000 clips take 74 MB)."""

    def __init__(self, shape: tuple[int, int, int], pool: int = 12000, seed: int = 0, progress: bool = False):
        import torch
        from tqdm.auto import tqdm

        from loom.plugins.common.mel import MelCodec, MelImage, MelSettings
        from loom.plugins.sounds import DURATION, SAMPLE_RATE, SoundsDataset

        channels, mels, frames = shape
        settings = MelSettings()
        samples = int(round(DURATION * SAMPLE_RATE))
        if channels != 1 or mels != settings.n_mels or frames < settings.frames(samples):
            raise InputError(
                f"Sounds trains on 1×{settings.n_mels}×frames log-mel spectrograms (at least {settings.frames(samples)} "
                f"frames for a {DURATION} s clip); this family trains on {channels}×{mels}×{frames} samples"
            )
        self.layout = MelImage(settings=settings, samples=samples, frames=frames)
        self.pool, self.seed = pool, seed
        dataset = SoundsDataset(seed, sample_rate=settings.sample_rate, training=True)
        codec = MelCodec(settings)
        self.captions: list[str] = []
        self.sounds: list = []
        chunks = []
        with tqdm(total=pool, desc="rendering sounds", unit="clip", disable=not progress, delay=1.0) as bar:
            for start in range(0, pool, 500):
                items = dataset.batch(start, min(500, pool - start))
                mel = self.layout.encode(torch.from_numpy(np.stack([it.waveform for it in items])), codec)
                chunks.append((mel[:, 0, :, :, None] * 255).round().byte().numpy())
                self.captions += [it.caption for it in items]
                self.sounds += [it.sound for it in items]
                bar.update(len(items))
        self.pixels = np.concatenate(chunks)

    def describe(self) -> dict:
        return {"data": "sounds", "pool": self.pool, "data_seed": self.seed, "captions": "everyday"}

    def __len__(self) -> int:
        return self.pool

    def images(self, idx: list[int], rng: np.random.Generator) -> np.ndarray:
        return self.pixels[idx]

    def sample_prompts(self) -> list[str]:
        return list(SOUNDS_SAMPLE_PROMPTS)


#: Prompts of the sample grid for Sounds training (fixed, so grids compare across runs).
SOUNDS_SAMPLE_PROMPTS = (
    "three rising high beeps",
    "a low steady pure tone",
    "two falling medium buzzes",
    "a single high-pitched hiss, sweeping up",
    "3 beeps of low buzz, falling in pitch",
    "a pair of deep steady hissing noises",
    "one shrill descending sine tone",
    "two medium-pitched rising noise bursts",
)


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
                raise InputError(
                    f"{metadata}: line {n} is not a JSON object with 'file_name' and 'text'"
                ) from None
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
