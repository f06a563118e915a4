"""A checker for Shapes images: does an image show what its prompt asks for?

Every image is resized to 64×64 and each pixel classified to the nearest palette colour. The
background is the commonest class on the border. Each object the prompt names is found as the
largest solid 4-connected region of its colour; each pixel near that region is then read as a
blend of object and background colour (its coverage), and a circle, square and triangle, sharp
or Gaussian-blurred, are fitted to that coverage. The best fit gives the shape, its centre the
position (grid cell) and its extent the size (against the midpoint of small and large).

When the named colour is missing, the largest remaining region of another colour stands in, so
a shape drawn in the wrong colour costs only the colour attribute.

The held-back concepts (:data:`~.world.CONCEPTS`) are read too. A star is fitted beside the
other shapes in every image (no blur of a circle, square or triangle looks like one). Pink joins
the palette that pixels are classified to only for a prompt that names it, since red or purple
blurred into white passes through pink and would otherwise turn the fringes of older objects
into pink regions; in every image, though, a region whose purest pixels are nearer pink than any
world colour reads as pink, so a pink object never passes for the purple or white asked for.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
from PIL import Image

from loom.plugins.common.report import EvalReport, spec_reader, summarise

from .world import (
    BACKGROUND_COLOURS,
    COLOURS,
    CONCEPTS,
    NOVEL_COLOUR_RGB,
    NOVEL_COLOURS,
    NOVEL_SHAPES,
    OBJECT_COLOURS,
    POSITIONS,
    SHAPES,
    SIZE_FRACTION,
    SIZES,
    PromptSpec,
    Scene,
    parse_caption,
    star_vertices,
)

ATTRIBUTES: tuple[str, ...] = ("background", "colour", "shape", "position", "size")

_RES = 64
_CELL = _RES / 3
_CELL_TO_POSITION = {rc: name for name, rc in POSITIONS.items()}

# The smallest object drawn is 0.42 cell ≈ 9 px across at 64 px (a triangle of it covers ~40
# px); anything under a third of that is noise or a colour fringe, not an object.
_MIN_AREA = 0.3 * (SIZE_FRACTION["small"] * _CELL) ** 2 / 2
# Fringes where two colours blend are one or two pixels wide; an object has an interior.
_MIN_CORE_FRACTION = 0.15
_SIZE_THRESHOLD = (SIZE_FRACTION["small"] + SIZE_FRACTION["large"]) / 2 * _CELL

_N_VALUES = {
    "background": len(BACKGROUND_COLOURS),
    "colour": len(OBJECT_COLOURS),
    "shape": len(SHAPES),
    "position": len(POSITIONS),
    "size": len(SIZES),
}


@dataclass
class PromptScore:
    """Per-attribute verdicts for one image; None where the prompt doesn't state the attribute.

    For a two-object prompt an attribute is right only if it is right for both objects.
    ``objects`` is the number of objects the prompt names, ``found`` how many regions stood for
    them, ``extra`` how many other objects the image shows (any makes the prompt wrong: nobody
    asked for them), and ``detected`` what was measured for each.
    """

    attributes: dict[str, bool | None]
    objects: int
    correct: bool
    found: int = 0
    detected: list[dict[str, Any]] = field(default_factory=list)
    extra: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "attributes": dict(self.attributes),
            "objects": self.objects,
            "correct": self.correct,
            "found": self.found,
            "extra": self.extra,
            "detected": [dict(d) for d in self.detected],
        }


def _to_array(image: Any) -> np.ndarray:
    """Any image as 64×64×3 uint8."""
    if isinstance(image, Image.Image):
        pil = image.convert("RGB")
    else:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
            arr = arr.transpose(1, 2, 0)  # channels-first, as a tensor would come
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise ValueError(f"expected an H×W×3 image, got an array of shape {arr.shape}")
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        arr = arr[:, :, :3]
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating):
                arr = np.nan_to_num(arr.astype(np.float32)) * 255.0  # floats are [0, 1]
            arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        pil = Image.fromarray(np.ascontiguousarray(arr), "RGB")
    if pil.size == (_RES, _RES):
        return np.asarray(pil, dtype=np.uint8)
    # BOX averages exactly when shrinking; when enlarging, bilinear adds no overshoot colours.
    shrinking = pil.size[0] >= _RES and pil.size[1] >= _RES
    resample = Image.BOX if shrinking else Image.BILINEAR
    return np.asarray(pil.resize((_RES, _RES), resample), dtype=np.uint8)


@dataclass(frozen=True)
class _Palette:
    """The colours pixels are classified to: ``names[k]`` is class k."""

    names: tuple[str, ...]
    rgb: np.ndarray
    sq: np.ndarray


_ALL_RGB = {name: np.array(rgb, dtype=np.float32) for name, rgb in {**COLOURS, **NOVEL_COLOUR_RGB}.items()}


@lru_cache(maxsize=8)
def _palette(novel: tuple[str, ...] = ()) -> _Palette:
    """The world's colours, then the held-back colours ``novel``."""
    names = tuple(COLOURS) + novel
    rgb = np.stack([_ALL_RGB[c] for c in names])
    return _Palette(names, rgb, (rgb**2).sum(1))


def _palette_for(spec: PromptSpec) -> _Palette:
    """The palette a prompt is read with: the world's colours, and a held-back one where the
    prompt names it (as an object's colour or the background)."""
    named = {spec.background, *(o.colour for o in spec.objects)}
    return _palette(tuple(c for c in NOVEL_COLOURS if c in named))


def _held_back_colour(colour: str, rgb: np.ndarray) -> str:
    """A region's colour: its palette class ``colour``, or a held-back colour where its purest
    pixels (``rgb``) are nearer that than any colour of the world. Against a prompt that does not
    name pink, a pink object's pixels are classified as the nearest of purple, white and gray;
    read this way it is still pink, and wrong for whichever of them was asked for."""
    distances = {name: float(((rgb - c) ** 2).sum()) for name, c in _ALL_RGB.items()}
    nearest = min(distances, key=distances.__getitem__)
    return nearest if nearest in NOVEL_COLOURS else colour


def _classify(img: np.ndarray, palette: _Palette) -> np.ndarray:
    flat = img.reshape(-1, 3).astype(np.float32)
    # |p - c|² without the |p|² term, which is the same for every palette colour.
    d = palette.sq[None, :] - 2.0 * flat @ palette.rgb.T
    return d.argmin(1).reshape(img.shape[:2])


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a small boolean mask, as arrays of flat indices."""
    h, w = mask.shape
    remaining = set(np.flatnonzero(mask).tolist())
    comps = []
    while remaining:
        start = remaining.pop()
        stack = [start]
        comp = [start]
        while stack:
            p = stack.pop()
            r, c = divmod(p, w)
            for q, ok in ((p - w, r > 0), (p + w, r < h - 1), (p - 1, c > 0), (p + 1, c < w - 1)):
                if ok and q in remaining:
                    remaining.discard(q)
                    stack.append(q)
                    comp.append(q)
        comps.append(np.array(comp, dtype=np.int64))
    return comps


def _core(mask: np.ndarray) -> np.ndarray:
    """Pixels whose four neighbours are all in ``mask``; outside the image counts as inside."""
    p = np.pad(mask, 1, mode="edge")
    return mask & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


# Area of each shape as a fraction of its extent squared (extent = diameter, side, the
# triangle's base and height, or the diameter of the circle through the star's points).
_STAR = np.array(star_vertices(0.0, 0.0, 0.5))  # the star of extent 1
_AREA_FACTOR = {
    "circle": math.pi / 4,
    "square": 1.0,
    "triangle": 0.5,
    "star": 0.5 * abs(float(_STAR[:, 0] @ np.roll(_STAR[:, 1], 1) - _STAR[:, 1] @ np.roll(_STAR[:, 0], 1))),  # shoelace
}
#: Every shape fitted to a region: the world's, and the held-back star.
_FITTED_SHAPES: tuple[str, ...] = SHAPES + NOVEL_SHAPES
_SUPERSAMPLE = 4
# Generated images are blurry, so shapes are also fitted blurred by these Gaussian widths (px at
# 64×64); the sharp fit stays first so clean renders are judged exactly.
_BLURS = (0.0, 0.7, 1.4, 2.1)
_FRINGE = 3  # px around a region whose blended colours may still belong to it
_PAD = _FRINGE + 1


def _shape_coverage(shape: str, cx: float, cy: float, extent: float, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Fraction of each pixel a shape covers, from the sub-pixel centres ``ys`` and ``xs``."""
    y = ys[:, None] - cy
    x = xs[None, :] - cx
    half = extent / 2
    if shape == "circle":
        inside = x * x + y * y <= half * half
    elif shape == "square":
        inside = (np.abs(x) <= half) & (np.abs(y) <= half)
    elif shape == "triangle":
        # Apex up: the half-width grows linearly from 0 at the top to half at the base.
        inside = (y <= half) & (np.abs(x) <= (y + half) / 2)
    else:
        inside = _inside_polygon(_STAR * extent, x, y)
    h, w = inside.shape
    s = _SUPERSAMPLE
    return inside.reshape(h // s, s, w // s, s).mean((1, 3))


def _inside_polygon(corners: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether each point (``x`` a row, ``y`` a column, broadcast) is inside the polygon of
    ``corners`` (even-odd rule: a ray to the left crosses its edges an odd number of times)."""
    inside = np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=bool)
    for (xa, ya), (xb, yb) in zip(corners, np.roll(corners, 1, axis=0)):
        if ya == yb:
            continue  # a horizontal edge is never crossed
        crosses = (ya > y) != (yb > y)
        inside ^= crosses & (x < xa + (y - ya) * (xb - xa) / (yb - ya))
    return inside


@lru_cache(maxsize=512)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """n×n matrix applying a 1-D Gaussian blur (zero outside) along one axis."""
    d = np.arange(n)[:, None] - np.arange(n)[None, :]
    k = np.exp(-0.5 * (d / sigma) ** 2)
    x = np.arange(-math.ceil(4 * sigma), math.ceil(4 * sigma) + 1)
    return (k / np.exp(-0.5 * (x / sigma) ** 2).sum()).astype(np.float32)


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return a
    return _blur_matrix(a.shape[0], sigma) @ a @ _blur_matrix(a.shape[1], sigma).T


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        p = np.pad(mask, 1)
        mask = mask | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
    return mask


class _Region:
    """One candidate object: a solid connected region of a palette class, fitted with a shape.

    Anti-aliasing and blur turn edges into blends of object and background colour. Reading each
    pixel's blend as partial coverage (alpha) and fitting every shape, sharp or blurred, to that
    coverage keeps even small shapes (9 px across) apart, where a thresholded mask makes a small
    circle look like a square. Coverage is also what position and size are read from: blur
    moves neither the coverage centroid nor the total coverage.
    """

    def __init__(self, idx: np.ndarray, colour: str, img: np.ndarray, bg_rgb: np.ndarray):
        self.idx = idx
        self.area = int(idx.size)
        rows, cols = np.divmod(idx, _RES)
        r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        R0, R1 = max(0, r0 - _PAD), min(_RES, r1 + _PAD)
        C0, C1 = max(0, c0 - _PAD), min(_RES, c1 + _PAD)
        win = img[R0:R1, C0:C1]
        mask = np.zeros((R1 - R0, C1 - C0), dtype=bool)
        mask[rows - R0, cols - C0] = True

        # The object's own colour, from its purest pixels (those furthest from the background),
        # tolerates colour shifts and noise better than the palette entry or a plain mean.
        pix = img[rows, cols]
        dist = ((pix - bg_rgb) ** 2).sum(1)
        k = max(1, idx.size // 8)
        obj_rgb = pix[np.argpartition(-dist, k - 1)[:k]].mean(0)
        self.colour = _held_back_colour(colour, obj_rgb)
        axis = obj_rgb - bg_rgb
        alpha = np.clip(((win - bg_rgb) @ axis) / max(float(axis @ axis), 1e-6), 0.0, 1.0)
        alpha = np.where(_dilate(mask, _FRINGE), alpha, 0.0).astype(np.float32)
        total = float(alpha.sum())
        gy, gx = np.mgrid[R0:R1, C0:C1] + 0.5
        my = float((alpha * gy).sum() / total)
        mx = float((alpha * gx).sum() / total)

        s = _SUPERSAMPLE
        ys = R0 + (np.arange((R1 - R0) * s) + 0.5) / s
        xs = C0 + (np.arange((C1 - C0) * s) + 0.5) / s
        self.fit_errors: dict[str, float] = {}
        fits = {}
        for shape in _FITTED_SHAPES:
            extent = math.sqrt(total / _AREA_FACTOR[shape])
            # A triangle's centroid sits a sixth of its height below its box centre.
            cy = my - extent / 6 if shape == "triangle" else my
            cov = _shape_coverage(shape, mx, cy, extent, ys, xs)
            err = min(float(np.abs(_blur(cov, b) - alpha).sum()) for b in _BLURS) / total
            self.fit_errors[shape] = err
            fits[shape] = (mx, cy, extent)
        self.shape = min(self.fit_errors, key=self.fit_errors.get)
        cx, cy, self.extent = fits[self.shape]
        self.centre = (cx, cy)
        self.size = "large" if self.extent > _SIZE_THRESHOLD else "small"
        col = min(2, max(0, int(cx // _CELL)))
        row = min(2, max(0, int(cy // _CELL)))
        self.position = _CELL_TO_POSITION[(row, col)]

    def describe(self) -> dict[str, Any]:
        return {
            "colour": self.colour,
            "shape": self.shape,
            "position": self.position,
            "size": self.size,
            "area": self.area,
            "centre": [round(self.centre[0], 2), round(self.centre[1], 2)],
            "extent": round(self.extent, 2),
            "fit_errors": {k: round(v, 3) for k, v in self.fit_errors.items()},
        }


_as_spec = spec_reader(parse_caption, Scene, PromptSpec.from_scene, PromptSpec)


def _chance(spec: PromptSpec) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    whole = 1.0
    # A prompt naming a held-back concept is guessed among the world's values and the held-back ones.
    named = {v for o in spec.objects for v in (o.shape, o.colour)}
    novel = {"shape": len(NOVEL_SHAPES), "colour": len(NOVEL_COLOURS)} if named & set(CONCEPTS) else {}
    for a in ATTRIBUTES:
        if a == "background":
            stated = 0 if spec.background is None else 1
        else:
            stated = sum(getattr(o, a) is not None for o in spec.objects)
        p = (1.0 / (_N_VALUES[a] + novel.get(a, 0))) ** stated
        out[a] = p if stated else None
        whole *= p
    out["whole_prompt"] = whole
    return out


def _agreement(o: Any, r: "_Region") -> int:
    return sum(
        getattr(o, a) is not None and getattr(o, a) == getattr(r, a) for a in ("colour", "shape", "position", "size")
    )


def _best_assignment(objects: list, candidates: list["_Region"]) -> list["_Region | None"]:
    """A region (or None, when too few) for each object: the assignment agreeing with the most
    stated attributes, ties to the larger regions (candidates come largest first)."""
    if not objects:
        return []
    slots = candidates + [None] * max(0, len(objects) - len(candidates))
    best = max(
        itertools.permutations(slots, len(objects)),
        key=lambda pick: (
            sum(_agreement(o, r) for o, r in zip(objects, pick) if r is not None),
            sum(r.area for r in pick if r is not None),
        ),
    )
    return list(best)


def _background(classes: np.ndarray, imgf: np.ndarray, palette: _Palette) -> tuple[int, np.ndarray]:
    """The palette class commonest on the border, and the mean colour of its border pixels."""
    border = np.concatenate([classes[0], classes[-1], classes[1:-1, 0], classes[1:-1, -1]])
    bg_class = int(np.bincount(border, minlength=len(palette.names)).argmax())
    border_rgb = np.concatenate([imgf[0], imgf[-1], imgf[1:-1, 0], imgf[1:-1, -1]])
    return bg_class, border_rgb[border == bg_class].mean(0)


class _Regions:
    """The solid regions of each palette class of one image, found when first asked for."""

    def __init__(self, classes: np.ndarray, imgf: np.ndarray, bg_rgb: np.ndarray, names: tuple[str, ...]):
        self.classes, self.imgf, self.bg_rgb, self.names = classes, imgf, bg_rgb, names
        self._found: dict[int, list[_Region]] = {}

    def __call__(self, k: int) -> list[_Region]:
        """Solid regions of palette class k, largest first."""
        if k not in self._found:
            mask = self.classes == k
            core = _core(mask).ravel()
            found = [
                _Region(idx, self.names[k], self.imgf, self.bg_rgb)
                for idx in _components(mask)
                if idx.size >= _MIN_AREA and core[idx].sum() >= _MIN_CORE_FRACTION * idx.size
            ]
            found.sort(key=lambda r: -r.area)
            self._found[k] = found
        return self._found[k]


def _match_objects(spec: PromptSpec, regions: _Regions, background: str, bg_class: int) -> tuple[list, set[int]]:
    """The region standing for each object of ``spec`` (None where none does), and the ids of
    the regions used."""
    n = len(spec.objects)
    matched: list[_Region | None] = [None] * n
    used: set[int] = set()  # ids of regions already standing for an object

    # Objects of a named colour first, so the fallback below cannot take their regions.
    for i, o in enumerate(spec.objects):
        if o.colour is None or o.colour == background:
            continue
        for r in regions(regions.names.index(o.colour)):
            if id(r) not in used:
                matched[i] = r
                used.add(id(r))
                break
    # The rest stand for the objects with no colour named (or a missing one): the largest
    # regions left, assigned so that they agree with the most stated attributes.
    open_ = [i for i in range(n) if matched[i] is None]
    candidates = sorted(
        (r for k in range(len(regions.names)) if k != bg_class for r in regions(k) if id(r) not in used),
        key=lambda r: -r.area,
    )[: len(open_) + 2]
    for i, r in zip(open_, _best_assignment([spec.objects[i] for i in open_], candidates)):
        matched[i] = r
        if r is not None:
            used.add(id(r))
    return matched, used


def _verdicts(spec: PromptSpec, matched: list, background: str) -> dict[str, bool | None]:
    """Per attribute: right for every object stating it (None where no object states it)."""
    verdicts: dict[str, list[bool]] = {a: [] for a in ATTRIBUTES}
    if spec.background is not None:
        verdicts["background"].append(spec.background == background)
    for o, r in zip(spec.objects, matched):
        for a in ("colour", "shape", "position", "size"):
            want = getattr(o, a)
            if want is not None:
                verdicts[a].append(r is not None and getattr(r, a) == want)
    return {a: (all(v) if v else None) for a, v in verdicts.items()}


class ShapesEval:
    """Scores images against Shapes prompts. Stateless and cheap: build one and reuse it."""

    def evaluate(self, image: Any, prompt: Any) -> PromptScore:
        spec = _as_spec(prompt)
        img = _to_array(image)
        palette = _palette_for(spec)
        classes = _classify(img, palette)
        imgf = img.astype(np.float32)
        bg_class, bg_rgb = _background(classes, imgf, palette)
        background = palette.names[bg_class]
        regions = _Regions(classes, imgf, bg_rgb, palette.names)
        matched, used = _match_objects(spec, regions, background, bg_class)
        attributes = _verdicts(spec, matched, background)
        extra = sum(id(r) not in used for k in range(len(palette.names)) if k != bg_class for r in regions(k))
        correct = extra == 0 and all(v is not False for v in attributes.values())
        detected = [{"background": background}] + [r.describe() if r is not None else {} for r in matched]
        return PromptScore(
            attributes=attributes,
            objects=len(spec.objects),
            correct=correct,
            found=sum(r is not None for r in matched),
            detected=detected,
            extra=extra,
        )

    def evaluate_many(self, images: Sequence[Any], prompts: Sequence[Any]) -> EvalReport:
        """Score each image against its prompt. ``images`` may be a list or an N×H×W×3 array."""
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images for {len(prompts)} prompts")
        scores = []
        chances = []
        for image, prompt in zip(images, prompts):
            spec = _as_spec(prompt)
            scores.append(self.evaluate(image, spec))
            chances.append(_chance(spec))
        return summarise(scores, chances, ATTRIBUTES)


__all__ = ["ATTRIBUTES", "EvalReport", "PromptScore", "ShapesEval"]
