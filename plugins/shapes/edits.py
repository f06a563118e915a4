"""Edit tasks of the Shapes world (``loom eval edits``): a rendered scene to start from, a prompt
that changes one object, and ShapesEval reading the result.

- **recolour**: the scene, prompted with one object's colour changed, run image-to-image at a
  strength drawn from :data:`RECOLOUR_STRENGTHS`. Passes when ShapesEval finds the whole prompt
  right: the object in its new colour and the rest of the scene as before.
- **repaint**: the cell of one object masked (white = repaint), prompted with a different object
  there (another shape and another colour, either size), run at the generator's own strength.
  Passes when ShapesEval finds the whole prompt right: the new object there, the old one gone,
  the rest as before.
- **keep**: on the repaint outputs, what lies outside the mask dilated by :func:`keep_margin`
  pixels must stay: a mean absolute change there of at most :data:`KEEP_TOLERANCE`.

Each kind is drawn from its own stream of the seed, so task i is the same for any ``n`` > i and
no task is an evaluation prompt or training scene of the same seed. Imports no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from .evaluate import ShapesEval
from .world import OBJECT_COLOURS, POSITIONS, SHAPES, SIZES, Scene, caption, render, sample_scene

#: The kinds of edit task, each drawn from its own stream.
EDIT_KINDS: tuple[str, ...] = ("recolour", "repaint")
#: Strengths a recolour task is run at (one drawn per task): enough to change a colour, too
#: little to redraw the scene.
RECOLOUR_STRENGTHS: tuple[float, ...] = (0.6, 0.7, 0.8)
#: Side of the images a task starts from (ShapesEval's own resolution).
EDIT_IMAGE_SIZE = 64
#: The most the pixels outside a repaint's dilated mask may change on average (of 1.0: 2 of 255 levels).
KEEP_TOLERANCE = 2 / 255

# A tag in the seed key keeps edit tasks out of the evaluation prompts' and datasets' streams.
_EDIT_STREAM = 0x45444954


def keep_margin(size: int) -> int:
    """Pixels the keep check adds around a mask: a generator may blend across the mask's edge."""
    return math.ceil(size / 32)


@dataclass(frozen=True)
class EditTask:
    """One edit: start from ``scene``, asked by ``prompt`` (a full caption of ``target``) to
    change object ``edited``; ``strength``: the recolour's, None for the generator's own."""

    kind: str
    scene: Scene
    target: Scene
    prompt: str
    edited: int
    strength: float | None = None
    size: int = EDIT_IMAGE_SIZE

    def image(self) -> np.ndarray:
        """The scene to start from, size×size×3 uint8 (no jitter)."""
        return render(self.scene, self.size)

    def mask(self) -> np.ndarray | None:
        """size×size uint8, 255 on the edited object's cell (repaint); None for a recolour."""
        if self.kind != "repaint":
            return None
        return cell_mask(self.scene.objects[self.edited].position, self.size).astype(np.uint8) * 255


def cell_mask(position: str, size: int, margin: int = 0) -> np.ndarray:
    """size×size bool, True on the grid cell of ``position`` grown by ``margin`` pixels each way."""
    row, col = POSITIONS[position]
    r0, r1 = round(row * size / 3) - margin, round((row + 1) * size / 3) + margin
    c0, c1 = round(col * size / 3) - margin, round((col + 1) * size / 3) + margin
    out = np.zeros((size, size), dtype=bool)
    out[max(0, r0) : r1, max(0, c0) : c1] = True
    return out


def _new_colour(rng: np.random.Generator, scene: Scene) -> str:
    """An object colour unlike the background and every object's in ``scene``."""
    taken = {scene.background, *(o.colour for o in scene.objects)}
    free = [c for c in OBJECT_COLOURS if c not in taken]
    return free[rng.integers(len(free))]


def _recolour(rng: np.random.Generator, size: int) -> EditTask:
    scene = sample_scene(rng)
    k = int(rng.integers(len(scene.objects)))
    objects = list(scene.objects)
    objects[k] = replace(objects[k], colour=_new_colour(rng, scene))
    target = Scene(scene.background, tuple(objects))
    strength = RECOLOUR_STRENGTHS[rng.integers(len(RECOLOUR_STRENGTHS))]
    return EditTask("recolour", scene, target, caption(target, rng), k, float(strength), size)


def _repaint(rng: np.random.Generator, size: int) -> EditTask:
    scene = sample_scene(rng)
    k = int(rng.integers(len(scene.objects)))
    old = scene.objects[k]
    shapes = [s for s in SHAPES if s != old.shape]
    new = replace(
        old,
        shape=shapes[rng.integers(len(shapes))],
        colour=_new_colour(rng, scene),
        size=SIZES[rng.integers(len(SIZES))],
    )
    target = Scene(scene.background, tuple(new if i == k else o for i, o in enumerate(scene.objects)))
    return EditTask("repaint", scene, target, caption(target, rng), k, None, size)


def edit_tasks(n: int, seed: int, size: int = EDIT_IMAGE_SIZE) -> list[EditTask]:
    """``n`` tasks of each kind of :data:`EDIT_KINDS` in turn, drawn from ``seed`` (a kind's own stream)."""
    makers = {"recolour": _recolour, "repaint": _repaint}
    tasks = []
    for stream, kind in enumerate(EDIT_KINDS):
        rng = np.random.default_rng([int(seed), _EDIT_STREAM, stream])
        tasks += [makers[kind](rng, size) for _ in range(n)]
    return tasks


def _at_size(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` (H×W×3 uint8) as size×size: averaged when shrinking, bilinear when enlarging."""
    image = np.asarray(image, dtype=np.uint8)
    if image.shape[:2] == (size, size):
        return image
    pil = Image.fromarray(np.ascontiguousarray(image[:, :, :3]), "RGB")
    shrinking = min(pil.size) >= size
    return np.asarray(pil.resize((size, size), Image.BOX if shrinking else Image.BILINEAR), dtype=np.uint8)


def change_outside(task: EditTask, output: np.ndarray) -> float:
    """Mean absolute change (of 1.0) from the task's image to ``output`` outside its mask grown by
    :func:`keep_margin` pixels; ``output`` of another size is first brought to the task's."""
    keep = ~cell_mask(task.scene.objects[task.edited].position, task.size, keep_margin(task.size))
    before = task.image().astype(np.float32)
    after = _at_size(output, task.size).astype(np.float32)
    return float(np.abs(after - before)[keep].mean() / 255.0)


def _rate(values: list[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def _noise_keeps(task: EditTask, i: int) -> bool:
    """Whether a uniformly random image keeps what ``task`` asks kept (the keep score's chance)."""
    noise = np.random.default_rng([i, _EDIT_STREAM, len(EDIT_KINDS)]).integers(0, 256, (task.size, task.size, 3))
    return change_outside(task, noise.astype(np.uint8)) <= KEEP_TOLERANCE


def _verdicts(tasks: list[EditTask], outputs: list[np.ndarray]) -> tuple[list[dict], list[float]]:
    """Each task's verdict (kind, prompt, strength, ShapesEval's whole-prompt ``correct``, and for a
    repaint its ``change_outside``), and the repaints' changes unrounded."""
    checker, items, changes = ShapesEval(), [], []
    for task, output in zip(tasks, outputs):
        item = {"kind": task.kind, "prompt": task.prompt, "strength": task.strength}
        item["correct"] = checker.evaluate(output, task.prompt).correct
        if task.kind == "repaint":
            changes.append(change_outside(task, output))
            item["change_outside"] = round(changes[-1], 6)
        items.append(item)
    return items, changes


def score_edits(tasks: list[EditTask], outputs: list[np.ndarray]) -> dict:
    """Each kind's score (the share of its tasks passed) with its ``n``, ``chance`` and what it
    measures (``about``), and each task's verdict in ``items``. ``outputs[i]``: the generator's
    image for ``tasks[i]`` (H×W×3 uint8)."""
    if len(tasks) != len(outputs):
        raise ValueError(f"got {len(outputs)} outputs for {len(tasks)} edit tasks")
    items, changes = _verdicts(tasks, outputs)
    repaints = [(i, t) for i, t in enumerate(tasks) if t.kind == "repaint"]

    def kind(name: str, chance: float, about: str) -> dict:
        passed = [it["correct"] for it in items if it["kind"] == name]
        return {"n": len(passed), "score": _rate(passed), "chance": chance, "about": about}

    low, high = RECOLOUR_STRENGTHS[0], RECOLOUR_STRENGTHS[-1]
    colours, combinations = len(OBJECT_COLOURS), len(SHAPES) * len(OBJECT_COLOURS) * len(SIZES)
    return {
        "recolour": kind(
            "recolour", 1 / colours, f"one object's colour changed at strength {low:g}–{high:g}; chance: 1 of {colours}"
        ),
        "repaint": kind(
            "repaint",
            1 / combinations,
            f"another object in a masked cell; chance: 1 shape, colour, size of {combinations}",
        ),
        "keep": {
            "n": len(changes),
            "score": _rate([c <= KEEP_TOLERANCE for c in changes]),
            "chance": _rate([_noise_keeps(t, i) for i, t in repaints]),
            "about": f"repaints changing ≤ {KEEP_TOLERANCE * 255:g}/255 outside the mask; chance: a random image's",
            "mean_change": sum(changes) / len(changes) if changes else None,
        },
        "items": items,
    }


__all__ = [
    "EDIT_IMAGE_SIZE",
    "EDIT_KINDS",
    "KEEP_TOLERANCE",
    "RECOLOUR_STRENGTHS",
    "EditTask",
    "cell_mask",
    "change_outside",
    "edit_tasks",
    "keep_margin",
    "score_edits",
]
