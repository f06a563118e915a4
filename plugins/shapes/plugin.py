"""The Shapes plugin: registers the Shapes world, which image families train on (``loom train
FAMILY --data shapes``) and ShapesEval grades (``loom eval shapes``). No torch is imported."""

from __future__ import annotations

import numpy as np

from loom.core import InputError, hookimpl
from loom.plugins.common.report import run_in_batches, spread
from loom.plugins.common.world import ProceduralWorld

from . import edits, world
from .evaluate import ShapesEval
from .world import (
    DIVERSITY_PROMPTS,
    everyday_caption,
    is_held_out,
    parse_caption,
    render,
    sample_training_scene,
    world_distribution,
)

LOOM_PLUGIN_API = "1.3"

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


class ShapesData:
    """``pool`` Shapes scenes with everyday captions drawn from ``seed`` (attributes left out at
    the world's rates; no held-out combination); each batch re-renders its scenes with fresh
    jitter drawn from the numpy generator the workflow passes (saved with checkpoints)."""

    def __init__(self, image_size: int, pool: int = 24000, seed: int = 0):
        self.image_size, self.pool, self.seed = image_size, pool, seed
        rng = np.random.default_rng(seed)
        self.scenes = [sample_training_scene(rng) for _ in range(pool)]
        self.captions = [everyday_caption(s, rng) for s in self.scenes]

    def describe(self) -> dict:
        return {"data": "shapes", "pool": self.pool, "data_seed": self.seed, "captions": "everyday"}

    def __len__(self) -> int:
        return self.pool

    def images(self, idx: list[int], rng: np.random.Generator) -> np.ndarray:
        return np.stack([render(self.scenes[i], self.image_size, rng) for i in idx])

    def sample_prompts(self) -> list[str]:
        return list(SHAPES_SAMPLE_PROMPTS)


class ShapesWorld(ProceduralWorld):
    """One or two coloured shapes on a coloured background, graded by :class:`ShapesEval`."""

    module = world
    name = "shapes"
    modality = "images"
    checker = "ShapesEval"

    def training_data(self, shape, pool, seed, progress=False) -> ShapesData:
        channels, height, width = shape
        if channels != 3 or height != width:
            raise InputError(
                f"Shapes trains on square RGB images; this family trains on {channels}×{height}×{width} samples"
            )
        return ShapesData(width, pool=pool or 24000, seed=seed)

    def is_unseen(self, prompt):
        return any(map(is_held_out, parse_caption(prompt).objects))

    def subsets(self):
        return {"one_object": lambda s: s.objects == 1, "two_objects": lambda s: s.objects == 2}

    def evaluate(self, pipeline, prompts, seeds, batch_size=32, progress=True):
        images = [im for out in run_in_batches(pipeline, prompts, seeds, batch_size, progress) for im in out.to_numpy()]
        # Scored on what each prompt states (parsed from its text), never on the scene it came from.
        report = ShapesEval().evaluate_many(images, prompts)
        report.prompts = list(prompts)
        return report

    # Edit tasks (``loom eval edits``): optional, beyond loom.core.World; the SDK uses a world's
    # when it has them (see loom.evaluation.evaluate_edits for what a task must offer).
    def edit_tasks(self, n: int, seed: int) -> list:
        """``n`` recolour and ``n`` repaint tasks drawn from ``seed`` (:func:`.edits.edit_tasks`)."""
        return edits.edit_tasks(n, seed)

    def score_edits(self, tasks: list, outputs: list) -> dict:
        """Each kind's score with its chance (recolour, repaint, keep; :func:`.edits.score_edits`)."""
        return edits.score_edits(tasks, outputs)

    def diversity(self, pipeline, seeds, progress=True, batch_size=32) -> dict:
        """:meth:`diversity_of` the images made for :data:`DIVERSITY_PROMPTS` over ``seeds`` seeds each."""
        texts = [p for p in DIVERSITY_PROMPTS for _ in range(seeds)]
        batches = run_in_batches(
            pipeline, texts, [i % seeds for i in range(len(texts))], batch_size, progress, "diversity"
        )
        images = [im for out in batches for im in out.to_numpy()]
        return self.diversity_of(
            [images[k * seeds : (k + 1) * seeds] for k in range(len(DIVERSITY_PROMPTS))], DIVERSITY_PROMPTS
        )

    def diversity_of(self, images: list, prompts) -> dict:
        """``images[k]``: the images made for one-object ``prompts[k]`` over many seeds. Per attribute
        each prompt leaves open (position, size, background), ``spread`` of what ShapesEval detects
        against the world's own distribution, averaged over the prompts; ``diversity`` is the least
        even attribute (1.0 = as even as the world, 0 = always the same)."""
        checker = ShapesEval()
        per: dict[str, list[float]] = {"position": [], "size": [], "background": []}
        for batch, prompt in zip(images, prompts):
            spec = parse_caption(prompt)
            scores = [checker.evaluate(img, spec) for img in batch]
            for attribute, values in per.items():
                if (spec.background if attribute == "background" else getattr(spec.objects[0], attribute)) is not None:
                    continue  # stated, not open
                found = [
                    s.detected[0]["background"] if attribute == "background" else s.detected[1].get(attribute)
                    for s in scores
                ]
                values.append(spread(found, world_distribution(attribute, spec.objects[0].colour)))
        means = {a: sum(v) / len(v) for a, v in per.items() if v}
        return {
            "prompts": len(images),
            "seeds": len(images[0]) if images else 0,
            "per_attribute": means,
            "diversity": min(means.values()) if means else None,
        }


@hookimpl
def loom_register_worlds(register):
    register(ShapesWorld())
