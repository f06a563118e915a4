"""A third party's world, written as a plugin module would hold it (it imports only
``loom.core``): one coloured dot on black. The caption names the colour ("a red dot"), the image
is a dot of that colour somewhere near the middle, and the checker reads the dot's colour back.

tests/test_worlds.py registers it the way discovery registers an installed plugin:
``get_registry().add_plugin(dot_world, "dot")``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loom.core import World, hookimpl

LOOM_PLUGIN_API = "1.3"

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 70, 220)}


def draw(colour: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A size×size×3 uint8 image: black, with a dot of ``colour`` whose centre ``rng`` jitters."""
    image = np.zeros((size, size, 3), np.uint8)
    cy, cx = rng.integers(size // 3, size - size // 3, 2)
    yy, xx = np.mgrid[:size, :size]
    image[(yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 6) ** 2] = COLOURS[colour]
    return image


def read_colour(image: np.ndarray) -> str:
    """The palette colour nearest the mean of the image's brightest tenth of pixels."""
    pixels = np.asarray(image, dtype=np.float32).reshape(-1, 3)
    brightest = pixels[np.argsort(pixels.sum(1))[-max(1, len(pixels) // 10) :]].mean(0)
    return min(COLOURS, key=lambda c: float(((brightest - np.array(COLOURS[c])) ** 2).sum()))


class DotData:
    """``pool`` captions of random colours; each image drawn afresh with the workflow's rng."""

    def __init__(self, size: int, pool: int, seed: int):
        self.size, self.pool, self.seed = size, pool, seed
        rng = np.random.default_rng(seed)
        self.colours = [str(rng.choice(list(COLOURS))) for _ in range(pool)]
        self.captions = [f"a {c} dot" for c in self.colours]

    def __len__(self) -> int:
        return self.pool

    def images(self, idx: list[int], rng: np.random.Generator) -> np.ndarray:
        return np.stack([draw(self.colours[i], self.size, rng) for i in idx])

    def sample_prompts(self) -> list[str]:
        return [f"a {c} dot" for c in COLOURS]

    def describe(self) -> dict:
        return {"data": "dot", "pool": self.pool, "data_seed": self.seed}


@dataclass
class DotScore:
    attributes: dict
    correct: bool
    found: str

    def to_dict(self) -> dict:
        return {"attributes": self.attributes, "correct": self.correct, "found": self.found}


@dataclass
class DotReport:
    scores: list
    prompts: list

    def to_dict(self) -> dict:
        stated = [s.attributes["colour"] for s in self.scores if s.attributes["colour"] is not None]
        n = len(self.scores)
        chance = (
            sum(1 / len(COLOURS) if s.attributes["colour"] is not None else 1.0 for s in self.scores) / n if n else None
        )
        return {
            "n": n,
            "whole_prompt": sum(s.correct for s in self.scores) / n if n else 0.0,
            "per_attribute": {"colour": sum(stated) / len(stated) if stated else None},
            "chance": {"colour": 1 / len(COLOURS) if stated else None, "whole_prompt": chance},
        }


class DotWorld(World):
    name = "dot"
    modality = "images"
    checker = "DotEval"

    def training_data(self, shape, pool, seed, progress=False):
        return DotData(shape[1], pool or 24, seed)

    def parse_caption(self, text):
        return next((c for c in COLOURS if c in text.split()), None)

    def prompts(self, n, seed, split="templated", combinations="any"):
        rng = np.random.default_rng([seed, 1 if split == "templated" else 2])
        colours = [str(rng.choice(list(COLOURS))) for _ in range(n)]
        return [(f"a {c} dot" if split == "templated" else "a dot", c) for c in colours]

    def score(self, image, prompt: str) -> DotScore:
        found, wanted = read_colour(image), self.parse_caption(prompt)
        right = None if wanted is None else found == wanted
        return DotScore({"colour": right}, right is not False, found)

    def _images(self, pipeline, prompts, seeds, batch_size):
        images = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            images.extend(pipeline.run(chunk, seeds[start : start + len(chunk)], progress=False).output.to_numpy())
        return images

    def evaluate(self, pipeline, prompts, seeds, batch_size=32, progress=True):
        images = self._images(pipeline, list(prompts), list(seeds), batch_size)
        return DotReport([self.score(im, p) for im, p in zip(images, prompts)], list(prompts))

    def diversity(self, pipeline, seeds, progress=True):
        found = {read_colour(im) for im in self._images(pipeline, ["a dot"] * seeds, list(range(seeds)), 32)}
        spread = (len(found) - 1) / (len(COLOURS) - 1)
        return {"prompts": 1, "seeds": seeds, "per_attribute": {"colour": spread}, "diversity": spread}


@hookimpl
def loom_register_worlds(register):
    register(DotWorld())
