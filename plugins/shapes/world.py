"""The Shapes world: scenes, captions, a caption parser, a renderer and a dataset.

A scene is a coloured background with one or two coloured shapes, each in one cell of a 3×3
grid. Everything is drawn from a ``numpy.random.Generator`` so that a dataset item depends only
on ``(seed, index)``.

Beside the world's own shapes and colours it holds back a star and pink (:data:`CONCEPTS`): drawn,
parsed and checked like the others, but in no stream of the world, so no shipped model has seen
them and a few images of one can teach a model something new (:func:`sample_concept_scene`,
:class:`ConceptDataset`, :func:`sample_concept_prompts`).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, astuple, dataclass, field
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from loom.plugins.common.world import SeededDataset

# Chosen so that every pair is at least ~100 apart in RGB: the checker classifies pixels to the
# nearest palette colour, and blurry generated images need that headroom.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 35),
    "green": (30, 170, 60),
    "blue": (35, 75, 215),
    "yellow": (245, 225, 40),
    "purple": (135, 45, 165),
    "orange": (245, 130, 20),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
OBJECT_COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "white")
BACKGROUND_COLOURS: tuple[str, ...] = tuple(COLOURS)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "large")

POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0),
    "top": (0, 1),
    "top right": (0, 2),
    "left": (1, 0),
    "center": (1, 1),
    "right": (1, 2),
    "bottom left": (2, 0),
    "bottom": (2, 1),
    "bottom right": (2, 2),
}
_CELL_TO_POSITION = {rc: name for name, rc in POSITIONS.items()}

#: Extent (diameter / side / base and height) of a shape as a fraction of a grid cell.
SIZE_FRACTION: dict[str, float] = {"small": 0.42, "large": 0.75}

MAX_OBJECTS = 2

# Held-back concepts: a shape and an object colour no shipped model was trained on. They are left
# out of SHAPES, OBJECT_COLOURS and COLOURS (and so out of every sampler, caption and evaluation
# stream above them), which keeps every existing scene, caption and prompt what it was; only the
# concept samplers below draw them. A star, not a hexagon: its points keep it far from a circle
# even 9 px across and blurred, where a hexagon fits a circle almost as well.
NOVEL_SHAPES: tuple[str, ...] = ("star",)
NOVEL_COLOURS: tuple[str, ...] = ("pink",)
#: RGB of the held-back colours: pink at least 140 from every colour of :data:`COLOURS` (purple
#: and gray are the nearest), so the checker's nearest-colour reading keeps it apart.
NOVEL_COLOUR_RGB: dict[str, tuple[int, int, int]] = {"pink": (255, 115, 190)}
#: Every held-back concept: what :func:`sample_concept_scene` and :func:`sample_concept_prompts` take.
CONCEPTS: tuple[str, ...] = NOVEL_SHAPES + NOVEL_COLOURS
#: Inner over outer radius of the star: fatter than a regular star's 0.38, so that its centre stays
#: solid and it is still found at the small size.
STAR_INNER_RATIO = 0.5

_ALL_SHAPES: tuple[str, ...] = SHAPES + NOVEL_SHAPES
_ALL_RGB: dict[str, tuple[int, int, int]] = {**COLOURS, **NOVEL_COLOUR_RGB}


def star_vertices(cx: float, cy: float, radius: float) -> list[tuple[float, float]]:
    """The ten corners of the five-pointed star, point up, whose points lie ``radius`` from
    ``(cx, cy)``: its extent (as a shape's, :data:`SIZE_FRACTION`) is ``2 * radius``."""
    corners = []
    for k in range(10):  # a point every 72°, from the top, with an inner corner between each two
        r, angle = (radius if k % 2 == 0 else radius * STAR_INNER_RATIO), math.pi * (k / 5 - 0.5)
        corners.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
    return corners


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeSpec:
    shape: str
    colour: str
    position: str
    size: str

    def __post_init__(self) -> None:
        _check("shape", self.shape, _ALL_SHAPES)
        _check("colour", self.colour, _ALL_RGB)
        _check("position", self.position, POSITIONS)
        _check("size", self.size, SIZES)


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[ShapeSpec, ...]

    def __post_init__(self) -> None:
        _check("background", self.background, COLOURS)
        # Accept any sequence but store a tuple, so scenes stay hashable and comparable.
        object.__setattr__(self, "objects", tuple(self.objects))
        if not self.objects:
            raise ValueError("a Scene needs at least one object")
        for o in self.objects:
            if not isinstance(o, ShapeSpec):
                raise TypeError(f"Scene objects must be ShapeSpec, got {type(o).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return {"background": self.background, "objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scene":
        return cls(d["background"], tuple(ShapeSpec(**o) for o in d["objects"]))


def _check(what: str, value: Any, allowed: Any) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")


def sample_scene(rng: np.random.Generator, two_object_prob: float = 0.5) -> Scene:
    """A random scene: objects in distinct cells, with distinct colours unlike the background."""
    background = BACKGROUND_COLOURS[rng.integers(len(BACKGROUND_COLOURS))]
    n = 2 if rng.random() < two_object_prob else 1
    colours = [c for c in OBJECT_COLOURS if c != background]
    colour_idx = rng.choice(len(colours), size=n, replace=False)
    cells = rng.choice(len(POSITIONS), size=n, replace=False)
    names = list(POSITIONS)
    objects = tuple(
        ShapeSpec(
            shape=SHAPES[rng.integers(len(SHAPES))],
            colour=colours[colour_idx[k]],
            position=names[cells[k]],
            size=SIZES[rng.integers(len(SIZES))],
        )
        for k in range(n)
    )
    return Scene(background, objects)


def _held_out_triples() -> frozenset[tuple[str, str, str]]:
    # (colour + 3·shape + cell) ≡ 0 mod 8 picks 24 of the 189 triples, about one in eight, so
    # that every colour–shape, colour–position and shape–position pair is still seen with other
    # third values: a held-out triple is a new combination of parts the model has learned.
    return frozenset(
        (c, s, p)
        for i, c in enumerate(OBJECT_COLOURS)
        for j, s in enumerate(SHAPES)
        for k, p in enumerate(POSITIONS)
        if (i + 3 * j + k) % 8 == 0
    )


#: (colour, shape, position) combinations that no training scene contains, so evaluation can
#: compare combinations a model has seen with ones it has not.
HELD_OUT: frozenset[tuple[str, str, str]] = _held_out_triples()


def is_held_out(o: "ShapeSpec | PartialShape") -> bool:
    """Whether an object's (colour, shape, position) is one of :data:`HELD_OUT`."""
    return (o.colour, o.shape, o.position) in HELD_OUT


def sample_training_scene(rng: np.random.Generator, two_object_prob: float = 0.5) -> Scene:
    """A random scene with no object in a :data:`HELD_OUT` combination (resampled until so)."""
    while True:
        scene = sample_scene(rng, two_object_prob)
        if not any(map(is_held_out, scene.objects)):
            return scene


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------


def _position_phrases() -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """Prepositional phrases ("in the top left") and bare ones ("top left corner") per cell."""
    prep: dict[str, tuple[str, ...]] = {}
    bare: dict[str, tuple[str, ...]] = {}
    for v, alt_v in (("top", "upper"), ("bottom", "lower")):
        for h in ("left", "right"):
            name = f"{v} {h}"
            prep[name] = (f"in the {v} {h}", f"in the {alt_v} {h} corner", f"at the {v} {h}")
            bare[name] = (f"{v} {h}", f"{v} {h} corner", f"{alt_v} {h}")
        prep[v] = (f"at the {v}", f"in the {v} middle", f"along the {v} edge")
        bare[v] = (v, f"{v} middle", f"{v} edge")
    for h in ("left", "right"):
        prep[h] = (f"on the {h}", f"in the middle {h}", f"along the {h} edge")
        bare[h] = (h, f"middle {h}", f"{h} edge")
    prep["center"] = ("in the center", "in the centre", "in the middle")
    bare["center"] = ("center", "centre", "middle")
    return prep, bare


POSITION_PHRASES, BARE_POSITION_PHRASES = _position_phrases()

# {a_bg} is "a"/"an" + background colour; {obj} is "<size> <colour> <shape>"; {pos} is a
# prepositional position phrase and {bare} a bare one. Objects keep the scene's order.
ONE_OBJECT_TEMPLATES: tuple[str, ...] = (
    "a {obj} {pos} on {a_bg} background",
    "on {a_bg} background, a {obj} {pos}",
    "{obj}, {bare}, {bg} background",
    "{a_bg} background with a {obj} {pos}",
    "{pos}, a {obj} against {a_bg} backdrop",
)
TWO_OBJECT_TEMPLATES: tuple[str, ...] = (
    "a {obj1} {pos1} and a {obj2} {pos2} on {a_bg} background",
    "on {a_bg} background, a {obj1} {pos1} and a {obj2} {pos2}",
    "{obj1}, {bare1}; {obj2}, {bare2}; {bg} background",
    "{a_bg} background with a {obj1} {pos1} and a {obj2} {pos2}",
)


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def caption_with_template(scene: Scene, rng: np.random.Generator, template: int | None = None) -> tuple[str, int]:
    """Like :func:`caption`, also returning the index of the template used.

    Templates are indexed within :data:`ONE_OBJECT_TEMPLATES` or :data:`TWO_OBJECT_TEMPLATES`
    according to the number of objects.
    """
    n = len(scene.objects)
    if n == 1:
        templates = ONE_OBJECT_TEMPLATES
    elif n == 2:
        templates = TWO_OBJECT_TEMPLATES
    else:
        raise ValueError(f"captions cover scenes of 1 or 2 objects, this one has {n}")
    t = int(rng.integers(len(templates))) if template is None else int(template)
    if not 0 <= t < len(templates):
        raise ValueError(f"template must be in [0, {len(templates)}), got {template}")
    fields: dict[str, str] = {"bg": scene.background, "a_bg": _article(scene.background)}
    for k, o in enumerate(scene.objects, start=1):
        suffix = "" if n == 1 else str(k)
        fields["obj" + suffix] = f"{o.size} {o.colour} {o.shape}"
        prep = POSITION_PHRASES[o.position]
        bare = BARE_POSITION_PHRASES[o.position]
        fields["pos" + suffix] = prep[rng.integers(len(prep))]
        fields["bare" + suffix] = bare[rng.integers(len(bare))]
    return templates[t].format(**fields), t


def caption(scene: Scene, rng: np.random.Generator, template: int | None = None) -> str:
    """A lowercase caption stating every attribute of every object and the background."""
    return caption_with_template(scene, rng, template)[0]


# Everyday captions: what people type. They leave attributes out (the image still shows a full
# scene, so a model learns to choose what the prompt leaves open) and use every word the parser
# knows, in several orders and sentence frames.

#: How often an everyday training caption states each attribute. An object always keeps its
#: colour or its shape (or both), so the parser can find it.
STATE_RATES: dict[str, float] = {"background": 0.5, "size": 0.5, "position": 0.6}
#: Of the objects, how often colour alone or shape alone is stated (the rest state both).
ONLY_COLOUR_RATE = 0.1
ONLY_SHAPE_RATE = 0.1
#: Share of training captions drawn from the full templates above instead.
FULL_CAPTION_SHARE = 0.3

_SIZE_SYNONYMS = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
_COLOUR_SYNONYMS = {"purple": ("purple", "violet"), "gray": ("gray", "grey")}
_SHAPE_SYNONYMS = {"circle": ("circle", "disc", "disk"), "square": ("square", "box"), "triangle": ("triangle",)}
_NO_SHAPE_WORDS = ("shape", "thing", "object", "one")


def _everyday_positions() -> dict[str, tuple[str, ...]]:
    where = ("of the picture", "of the image")
    out = {
        name: phrases + tuple(f"{p} {w}" for p in phrases[:1] for w in where)
        for name, phrases in POSITION_PHRASES.items()
    }
    for v, alt in (("top", "upper"), ("bottom", "lower")):
        for h in ("left", "right"):
            out[f"{v} {h}"] += (f"in the {alt} {h}", f"{v} {h}", f"in the {v}-{h} corner")
    out["center"] += ("right in the middle", "in the middle of the picture", "centred", "in the centre of the image")
    return out


EVERYDAY_POSITION_PHRASES = _everyday_positions()

# Sentence frames around the whole description. Evaluation uses frames of its own, so the
# underspecified split also measures phrasings no model trained on.
TRAINING_FRAMES: tuple[str, ...] = (
    "{}",
    "{}",
    "{}",
    "a picture of {}",
    "an image of {}",
    "there is {}",
    "draw {}",
    "{} please",
    "show me {}",
    "i want {}",
    "{}.",
)
EVALUATION_FRAMES: tuple[str, ...] = ("{}", "could you make {}", "generate {}", "{}, thanks", "i would like {}")
_JOINERS = (" and ", "; ", " next to ", " beside ", ", and ", " plus ")


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _object_phrase(o: ShapeSpec, stated: set[str], rng: np.random.Generator, alone: bool) -> str:
    colour = _pick(rng, _COLOUR_SYNONYMS.get(o.colour, (o.colour,))) if "colour" in stated else ""
    size = _pick(rng, _SIZE_SYNONYMS[o.size]) if "size" in stated else ""
    shape = _pick(rng, _SHAPE_SYNONYMS.get(o.shape, (o.shape,))) if "shape" in stated else _pick(rng, _NO_SHAPE_WORDS)
    if shape == "one" and not (colour or size):
        shape = "shape"
    if not size and colour and rng.random() < 0.15:
        words = f"something {colour}" if "shape" not in stated else f"{shape} in {colour}"
    elif size and rng.random() < 0.2:
        words = f"{colour} {shape}, {size}".strip()
    else:
        words = " ".join(w for w in (size, colour, shape) if w)
    if not words.startswith("something"):
        words = _article(words)
    if "position" in stated:
        position = _pick(rng, EVERYDAY_POSITION_PHRASES[o.position])
        words = f"{position}, {words}" if alone and rng.random() < 0.1 else f"{words} {position}"
    return words


def _with_background(text: str, background: str, closing: bool, rng: np.random.Generator) -> str:
    a_bg = _article(_pick(rng, _COLOUR_SYNONYMS.get(background, (background,))))
    bg = a_bg.split(" ", 1)[1]
    forms = [
        f"{text} on {a_bg} background",
        f"{text} against {a_bg} backdrop",
        f"{text}, {bg} background",
        f"{text} on a background of {bg}",
        f"{text}; the background is {bg}",
        f"{a_bg} background with {text}",
        f"on {a_bg} background, {text}",
    ]
    if closing:  # a bare closing colour is read as the background only at the very end
        forms.append(f"{text} on {bg}")
    return _pick(rng, forms)


def describe(
    scene: Scene,
    stated: Sequence[set[str]],
    background: bool,
    rng: np.random.Generator,
    frames: Sequence[str] = TRAINING_FRAMES,
) -> str:
    """An everyday caption of ``scene`` stating, per object, the attributes in ``stated[i]``
    (each holds "colour" or "shape") and the background if ``background``."""
    alone = len(scene.objects) == 1
    phrases = [_object_phrase(o, st, rng, alone) for o, st in zip(scene.objects, stated)]
    text = phrases[0] if len(phrases) == 1 else _pick(rng, _JOINERS).join(phrases)
    frame = _pick(rng, frames)
    if background:
        text = _with_background(text, scene.background, frame.endswith("{}"), rng)
    return frame.format(text)


def _stated_by_rates(rng: np.random.Generator) -> set[str]:
    u = rng.random()
    core = (
        {"colour"}
        if u < ONLY_COLOUR_RATE
        else {"shape"}
        if u < ONLY_COLOUR_RATE + ONLY_SHAPE_RATE
        else {"colour", "shape"}
    )
    return core | {a for a in ("size", "position") if rng.random() < STATE_RATES[a]}


def everyday_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A training caption: a full template (:data:`FULL_CAPTION_SHARE` of the time) or an
    everyday one leaving attributes out at :data:`STATE_RATES`."""
    if rng.random() < FULL_CAPTION_SHARE:
        return caption(scene, rng)
    stated = [_stated_by_rates(rng) for _ in scene.objects]
    return describe(scene, stated, bool(rng.random() < STATE_RATES["background"]), rng)


def _concept_attributes(o: ShapeSpec) -> set[str]:
    """The attributes of ``o`` that hold a held-back concept: "shape" for a star, "colour" for pink."""
    return {a for a, value in (("shape", o.shape), ("colour", o.colour)) if value in CONCEPTS}


def concept_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A training caption of a concept scene as :func:`everyday_caption` writes one, except that
    an everyday caption always states every held-back concept an object carries (one that left it
    out would teach nothing about it)."""
    if rng.random() < FULL_CAPTION_SHARE:
        return caption(scene, rng)
    stated = [_stated_by_rates(rng) | _concept_attributes(o) for o in scene.objects]
    return describe(scene, stated, bool(rng.random() < STATE_RATES["background"]), rng)


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartialShape:
    shape: str | None = None
    colour: str | None = None
    position: str | None = None
    size: str | None = None

    @classmethod
    def from_spec(cls, s: ShapeSpec) -> "PartialShape":
        return cls(s.shape, s.colour, s.position, s.size)

    @property
    def complete(self) -> bool:
        return None not in (self.shape, self.colour, self.position, self.size)

    def to_spec(self) -> ShapeSpec:
        if not self.complete:
            raise ValueError(f"{self} does not state every attribute")
        return ShapeSpec(*astuple(self))


@dataclass
class PromptSpec:
    """What a prompt asks for; any attribute the text doesn't state is None."""

    background: str | None
    objects: list[PartialShape] = field(default_factory=list)

    @classmethod
    def from_scene(cls, scene: Scene) -> "PromptSpec":
        return cls(scene.background, [PartialShape.from_spec(o) for o in scene.objects])

    @property
    def complete(self) -> bool:
        return self.background is not None and all(o.complete for o in self.objects)

    def to_scene(self) -> Scene:
        if self.background is None:
            raise ValueError("the prompt does not state a background colour")
        return Scene(self.background, tuple(o.to_spec() for o in self.objects))


_COLOUR_WORDS = {c: c for c in COLOURS} | {"grey": "gray", "violet": "purple"} | {"pink": "pink"}
_SHAPE_WORDS = {
    "circle": "circle", "circles": "circle", "disc": "circle", "disk": "circle",
    "square": "square", "squares": "square", "box": "square",
    "triangle": "triangle", "triangles": "triangle",
    "star": "star", "stars": "star",
}  # fmt: skip
_SIZE_WORDS = {
    "small": "small", "little": "small", "tiny": "small",
    "large": "large", "big": "large", "huge": "large",
}  # fmt: skip
_ROW_WORDS = {"top": 0, "upper": 0, "bottom": 2, "lower": 2}
_COL_WORDS = {"left": 0, "right": 2}
_CENTRE_WORDS = {"center", "centre", "middle", "central", "centred", "centered"}
# "right in the middle" says where, not which side.
_INTENSIFIER_RE = re.compile(r"\bright\s+(?=(?:in|at)\s+the\s+(?:middle|centre|center)\b)")

_COLOUR_RE = "|".join(sorted(_COLOUR_WORDS, key=len, reverse=True))
_BACKGROUND_RES = (
    re.compile(rf"\b({_COLOUR_RE})(?:[\s-]+(?:coloured|colored))?\s+(?:background|backdrop)\b"),
    re.compile(rf"\b(?:background|backdrop)[\s:=-]+(?:is\s+|of\s+)?(?:an?\s+)?({_COLOUR_RE})\b"),
    # "a red circle on blue": a bare colour closing the text can only be the background.
    re.compile(rf"\bon\s+(?:an?\s+)?({_COLOUR_RE})\W*$"),
)
# Object separators. None of these words occurs inside an object description or a position
# phrase, so splitting on them never cuts an object in two.
_SEPARATOR_RE = re.compile(r";|\band\b|\bnext to\b|\bbeside\b|\balongside\b|\bplus\b|\bwith\b")
_WORD_RE = re.compile(r"[a-z]+")

EXAMPLE_CAPTION = "a small red circle in the top left on a blue background"


def _parse_object(chunk: str) -> PartialShape | None:
    words = _WORD_RE.findall(chunk)
    colour = next((_COLOUR_WORDS[w] for w in words if w in _COLOUR_WORDS), None)
    shape = next((_SHAPE_WORDS[w] for w in words if w in _SHAPE_WORDS), None)
    if colour is None and shape is None:
        return None
    size = next((_SIZE_WORDS[w] for w in words if w in _SIZE_WORDS), None)
    row = next((_ROW_WORDS[w] for w in words if w in _ROW_WORDS), None)
    col = next((_COL_WORDS[w] for w in words if w in _COL_WORDS), None)
    position = None
    # Any position word states a position; the unnamed axis is then the middle one.
    if row is not None or col is not None or any(w in _CENTRE_WORDS for w in words):
        position = _CELL_TO_POSITION[(1 if row is None else row, 1 if col is None else col)]
    return PartialShape(shape=shape, colour=colour, position=position, size=size)


def parse_caption(text: str) -> PromptSpec:
    """Read a caption (or similar free text) into a :class:`PromptSpec`.

    The background is "<colour> background"/"backdrop", "background is <colour>" or a closing
    "on <colour>". Objects are separated by "and", "with", "next to", "beside", "alongside",
    "plus" or ";". Within an object the first colour, shape and size words count; position
    words (top/upper, bottom/lower, left, right, center/centre/middle) combine into a cell.
    Raises ValueError when no object (no shape or colour word) is found.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_caption expects a string, got {type(text).__name__}")
    lowered = _INTENSIFIER_RE.sub("", text.lower())
    background = None
    for pattern in _BACKGROUND_RES:
        m = pattern.search(lowered)
        if m:
            background = _COLOUR_WORDS[m.group(1)]
            lowered = lowered[: m.start()] + " ; " + lowered[m.end() :]
            break
    objects = [o for o in map(_parse_object, _SEPARATOR_RE.split(lowered)) if o is not None]
    if not objects:
        raise ValueError(
            f"no shape or colour found in {text!r}: expected a description such as "
            f"{EXAMPLE_CAPTION!r} (shapes: {', '.join(SHAPES)}; colours: {', '.join(COLOURS)})"
        )
    return PromptSpec(background, objects)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _supersample(size: int) -> int:
    # 4× anti-aliases small images well; past 128 px a pixel is small enough that 2× looks the
    # same and keeps a 256 px render from costing a 1024² canvas.
    return 4 if size <= 128 else 2


def render(scene: Scene, size: int = 64, rng: np.random.Generator | None = None) -> np.ndarray:
    """Draw ``scene`` as a ``size``×``size``×3 uint8 array.

    With ``rng``, each object's centre moves by up to ±size/32 px and its extent by ±5%, so a
    model cannot learn the exact pixel layout.
    """
    size = int(size)
    if size < 32:
        raise ValueError(f"render size must be at least 32, got {size}")
    s = _supersample(size)
    canvas = Image.new("RGB", (size * s, size * s), COLOURS[scene.background])
    draw = ImageDraw.Draw(canvas)
    cell = size / 3
    for o in scene.objects:
        row, col = POSITIONS[o.position]
        cx, cy = (col + 0.5) * cell, (row + 0.5) * cell
        extent = SIZE_FRACTION[o.size] * cell
        if rng is not None:
            shift = size / 32
            cx += rng.uniform(-shift, shift)
            cy += rng.uniform(-shift, shift)
            extent *= rng.uniform(0.95, 1.05)
        # PIL's outline coordinates are inclusive pixel indices; the -1 and the half-pixel
        # offsets make each supersampled shape cover [x0, x1) × [y0, y1).
        half = extent / 2
        x0, x1 = (cx - half) * s, (cx + half) * s
        y0, y1 = (cy - half) * s, (cy + half) * s
        fill = _ALL_RGB[o.colour]
        if o.shape == "circle":
            draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=fill)
        elif o.shape == "square":
            draw.rectangle([round(x0), round(y0), round(x1) - 1, round(y1) - 1], fill=fill)
        elif o.shape == "triangle":
            mid = (x0 + x1) / 2 - 0.5
            draw.polygon([(mid, y0), (x1 - 0.5, y1 - 0.5), (x0 - 0.5, y1 - 0.5)], fill=fill)
        else:
            draw.polygon([(x * s - 0.5, y * s - 0.5) for x, y in star_vertices(cx, cy, half)], fill=fill)
    # BOX averages each 4×4 block exactly; LANCZOS would ring and add off-palette colours.
    return np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.uint8).copy()


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapesItem:
    image: np.ndarray
    caption: str
    scene: Scene


class ShapesDataset(SeededDataset[ShapesItem]):
    """An endless, indexable dataset: item ``i`` depends only on ``(seed, i)``. ``arrays`` stacks
    the images as ``count``×H×W×3 uint8."""

    data = "image"

    def __init__(self, seed: int = 0, size: int = 64, two_object_prob: float = 0.5):
        if size < 32:
            raise ValueError(f"size must be at least 32, got {size}")
        self.seed = int(seed)
        self.size = int(size)
        self.two_object_prob = float(two_object_prob)

    def __repr__(self) -> str:
        return f"ShapesDataset(seed={self.seed}, size={self.size}, two_object_prob={self.two_object_prob})"

    def item(self, i: int) -> ShapesItem:
        if i < 0:
            raise IndexError(f"item index must be non-negative, got {i}")
        rng = np.random.default_rng([self.seed, int(i)])
        scene = sample_scene(rng, self.two_object_prob)
        text = caption(scene, rng)
        return ShapesItem(render(scene, self.size, rng), text, scene)


class ConceptDataset(SeededDataset[ShapesItem]):
    """Scenes featuring the held-back ``concept`` (:func:`sample_concept_scene`) with training
    captions (:func:`concept_caption`, or full ones with ``everyday=False``): an endless, indexable
    dataset whose item ``i`` depends only on ``(concept, seed, i)``, in a stream of its own."""

    data = "image"

    def __init__(self, concept: str, seed: int = 0, size: int = 64, everyday: bool = True):
        _check("concept", concept, CONCEPTS)
        if size < 32:
            raise ValueError(f"size must be at least 32, got {size}")
        self.concept, self.seed, self.size, self.everyday = concept, int(seed), int(size), bool(everyday)

    def __repr__(self) -> str:
        return f"ConceptDataset({self.concept!r}, seed={self.seed}, size={self.size}, everyday={self.everyday})"

    def item(self, i: int) -> ShapesItem:
        if i < 0:
            raise IndexError(f"item index must be non-negative, got {i}")
        rng = np.random.default_rng([self.seed, _CONCEPT_STREAM, CONCEPTS.index(self.concept), 2, int(i)])
        scene = sample_concept_scene(rng, self.concept)
        text = concept_caption(scene, rng) if self.everyday else caption(scene, rng)
        return ShapesItem(render(scene, self.size, rng), text, scene)


# A tag in the seed key keeps evaluation prompts out of every ShapesDataset stream, whose keys
# are [seed, i].
_PROMPT_STREAM = 0x50524F4D


def _combinations_ok(objects: Sequence["ShapeSpec | PartialShape"], combinations: str) -> bool:
    unseen = any(map(is_held_out, objects))
    return combinations == "any" or unseen == (combinations == "unseen")


def sample_prompts(
    n: int, seed: int = 1234, two_object_prob: float = 0.5, combinations: str = "any"
) -> list[tuple[str, Scene]]:
    """``n`` (caption, scene) pairs for evaluation, from a stream no dataset item uses.

    ``combinations``: "any"; "unseen", only scenes with an object in a :data:`HELD_OUT`
    combination; "seen", none. "any" keeps the stream the published scores were measured on."""
    if combinations not in ("any", "seen", "unseen"):
        raise ValueError(f"combinations must be any, seen or unseen, got {combinations!r}")
    rng = np.random.default_rng([int(seed), _PROMPT_STREAM, 1])
    out = []
    while len(out) < n:
        scene = sample_scene(rng, two_object_prob)
        text = caption(scene, rng)
        # Redrawn with the same number of objects: keeping whole draws that pass would make an
        # unseen split two-object in 69% of its prompts (a second object doubles the chance of a
        # held-out one), and seen against unseen would compare mixes, not combinations.
        while not _combinations_ok(scene.objects, combinations):
            scene = sample_scene(rng, float(len(scene.objects) == 2))
            text = caption(scene, rng)
        out.append((text, scene))
    return out


#: The kinds of the underspecified evaluation split, for one object: the attributes stated and
#: whether the background is. Two-object prompts leave one attribute of each object unsaid.
UNDERSPECIFIED_KINDS: tuple[tuple[frozenset[str], bool], ...] = tuple(
    (frozenset(stated), background)
    for stated, background in (
        ({"colour", "shape"}, True),  # a green triangle on a gray background
        ({"size", "colour", "shape"}, True),  # a big white square on a gray background
        ({"colour", "shape", "position"}, True),  # a green triangle in the center on a gray background
        ({"colour", "shape"}, False),  # a white circle
        ({"colour"}, False),  # something red
        ({"shape"}, False),  # a triangle
        ({"colour", "shape", "position"}, False),  # a red circle in the upper left corner
        ({"size", "colour", "shape", "position"}, False),  # no background
    )
)
#: Share of two-object prompts in the underspecified split.
UNDERSPECIFIED_TWO_OBJECT_SHARE = 0.25
_UNDERSPECIFIED_STREAM = 0x554E4453


def _two_object_stated(rng: np.random.Generator) -> set[str]:
    # One of the four attributes unsaid; colour and shape are never both gone.
    return {"colour", "shape", "position", "size"} - {_pick(rng, ("colour", "shape", "position", "size"))}


def sample_underspecified_prompts(n: int, seed: int = 1234, combinations: str = "any") -> list[tuple[str, Scene]]:
    """``n`` (caption, scene) pairs that each leave attributes unsaid (:data:`UNDERSPECIFIED_KINDS`,
    phrased with :data:`EVALUATION_FRAMES`), from a stream of their own; the scene is the one the
    caption was written from, so a ground-truth render shows one answer among those allowed.
    ``combinations`` as in :func:`sample_prompts`, judged on what the caption states."""
    if combinations not in ("any", "seen", "unseen"):
        raise ValueError(f"combinations must be any, seen or unseen, got {combinations!r}")
    rng = np.random.default_rng([int(seed), _UNDERSPECIFIED_STREAM, 1])
    out: list[tuple[str, Scene]] = []
    while len(out) < n:
        two = rng.random() < UNDERSPECIFIED_TWO_OBJECT_SHARE
        text, scene = _underspecified_prompt(rng, two)
        # judged on what the caption states; redrawn with the same number of objects, as in sample_prompts
        while not _combinations_ok(parse_caption(text).objects, combinations):
            text, scene = _underspecified_prompt(rng, two)
        out.append((text, scene))
    return out


def _underspecified_prompt(rng: np.random.Generator, two: bool) -> tuple[str, Scene]:
    scene = sample_scene(rng, 1.0 if two else 0.0)
    if two:
        stated, background = [_two_object_stated(rng) for _ in range(2)], bool(rng.random() < 0.5)
    else:
        kind, background = UNDERSPECIFIED_KINDS[int(rng.integers(len(UNDERSPECIFIED_KINDS)))]
        stated = [set(kind)]
    return describe(scene, stated, background, rng, EVALUATION_FRAMES), scene


# --------------------------------------------------------------------------------------------
# Held-back concepts
# --------------------------------------------------------------------------------------------

_CONCEPT_STREAM = 0x434F4E43
_CONCEPT_SPLITS = ("templated", "underspecified")


def sample_concept_scene(rng: np.random.Generator, concept: str, two_object_prob: float = 0.5) -> Scene:
    """A scene featuring the held-back ``concept`` (one of :data:`CONCEPTS`): one or two objects,
    either of them carrying it (a star's colour, a pink object's shape drawn from the world's);
    everything else drawn as :func:`sample_scene` draws it."""
    _check("concept", concept, CONCEPTS)
    background = BACKGROUND_COLOURS[rng.integers(len(BACKGROUND_COLOURS))]
    n = 2 if rng.random() < two_object_prob else 1
    k = int(rng.integers(n))  # the object carrying the concept
    colours = [c for c in OBJECT_COLOURS if c != background]
    colour_idx = rng.choice(len(colours), size=n, replace=False)
    cells = rng.choice(len(POSITIONS), size=n, replace=False)
    names = list(POSITIONS)
    objects = []
    for i in range(n):
        shape, colour = SHAPES[rng.integers(len(SHAPES))], colours[colour_idx[i]]
        if i == k:
            shape, colour = (concept, colour) if concept in NOVEL_SHAPES else (shape, concept)
        objects.append(ShapeSpec(shape, colour, names[cells[i]], SIZES[rng.integers(len(SIZES))]))
    return Scene(background, tuple(objects))


def sample_concept_prompts(n: int, concept: str, seed: int = 1234, split: str = "templated") -> list[tuple[str, Scene]]:
    """``n`` (caption, scene) evaluation pairs featuring the held-back ``concept``, from a stream
    of their own per concept and split. "templated": full captions (:func:`caption`);
    "underspecified": the kinds of :func:`sample_underspecified_prompts` that state the concept,
    phrased with :data:`EVALUATION_FRAMES`, the concept always stated. Prompts of the world's own
    concepts (:func:`sample_prompts`) are untouched."""
    _check("concept", concept, CONCEPTS)
    if split not in _CONCEPT_SPLITS:
        raise ValueError(f"split must be templated or underspecified, got {split!r}")
    rng = np.random.default_rng([int(seed), _CONCEPT_STREAM, CONCEPTS.index(concept), _CONCEPT_SPLITS.index(split)])
    attribute = "shape" if concept in NOVEL_SHAPES else "colour"
    kinds = [(stated, bg) for stated, bg in UNDERSPECIFIED_KINDS if attribute in stated]
    out: list[tuple[str, Scene]] = []
    for _ in range(n):
        if split == "templated":
            scene = sample_concept_scene(rng, concept)
            out.append((caption(scene, rng), scene))
            continue
        two = bool(rng.random() < UNDERSPECIFIED_TWO_OBJECT_SHARE)
        scene = sample_concept_scene(rng, concept, 1.0 if two else 0.0)
        if two:
            stated, background = [_two_object_stated(rng) for _ in range(2)], bool(rng.random() < 0.5)
        else:
            kind, background = kinds[int(rng.integers(len(kinds)))]
            stated = [set(kind)]
        stated = [st | _concept_attributes(o) for st, o in zip(stated, scene.objects)]
        out.append((describe(scene, stated, background, rng, EVALUATION_FRAMES), scene))
    return out


#: Prompts that leave position, size and background open, for the diversity measure: typed the
#: way people type them, one colour and shape each.
DIVERSITY_PROMPTS: tuple[str, ...] = (
    "a red circle", "a blue square", "a green triangle", "a yellow circle",
    "a white square", "a purple triangle", "an orange box", "a white disc",
)  # fmt: skip


def world_distribution(attribute: str, colour: str | None = None) -> dict[str, float]:
    """How :func:`sample_scene` draws ``attribute`` ("position", "size" or "background") for a
    one-object scene, given the object's ``colour`` (which the background never equals)."""
    if attribute == "position":
        return {p: 1 / len(POSITIONS) for p in POSITIONS}
    if attribute == "size":
        return {s: 1 / len(SIZES) for s in SIZES}
    if attribute != "background":
        raise ValueError(f"no world distribution for {attribute!r}")
    # P(background) is uniform; P(colour | background) is 1 over the object colours left.
    weights = {
        bg: (0.0 if bg == colour else 1 / len([c for c in OBJECT_COLOURS if c != bg])) for bg in BACKGROUND_COLOURS
    }
    total = sum(weights.values())
    return {bg: w / total for bg, w in weights.items()}


# --------------------------------------------------------------------------------------------
# Completing a prompt
# --------------------------------------------------------------------------------------------


def complete_scene(spec: PromptSpec, rng: np.random.Generator) -> Scene | None:
    """A scene with everything ``spec`` states; what it leaves unsaid is drawn as
    :func:`sample_scene` draws it (distinct cells, object colours unlike the background and each
    other). None when the spec names more objects than a scene holds."""
    objects = spec.objects
    if not 1 <= len(objects) <= MAX_OBJECTS:
        return None
    stated = [o.colour for o in objects if o.colour is not None]
    background = spec.background
    if background is None:
        if len(objects) == 1 and stated:
            weights = world_distribution("background", stated[0])
            background = str(rng.choice(list(weights), p=list(weights.values())))
        else:
            background = _pick(rng, [c for c in BACKGROUND_COLOURS if c not in stated])
    colours = [c for c in OBJECT_COLOURS if c != background and c not in stated] or list(OBJECT_COLOURS)
    cells = [p for p in POSITIONS if p not in {o.position for o in objects}]
    filled = []
    for o in objects:
        colour = o.colour or _pick(rng, colours)
        position = o.position or _pick(rng, cells)
        colours = [c for c in colours if c != colour] or colours
        cells = [p for p in cells if p != position] or cells
        filled.append(ShapeSpec(o.shape or _pick(rng, SHAPES), colour, position, o.size or _pick(rng, SIZES)))
    return Scene(background, tuple(filled))


def complete_prompt(text: str, rng: np.random.Generator) -> str:
    """``text`` as a caption stating every attribute (the first training template), with what it
    leaves unsaid drawn by :func:`complete_scene`; ``text`` itself when it is not a Shapes prompt
    (no shape or colour word, or too many objects), so that nothing a user types is lost."""
    try:
        scene = complete_scene(parse_caption(text), rng)
    except ValueError:
        return text
    return text if scene is None else caption(scene, rng, template=0)


__all__: Sequence[str] = (
    "CONCEPTS",
    "ConceptDataset",
    "NOVEL_COLOURS",
    "NOVEL_COLOUR_RGB",
    "NOVEL_SHAPES",
    "STAR_INNER_RATIO",
    "concept_caption",
    "sample_concept_prompts",
    "sample_concept_scene",
    "star_vertices",
    "BACKGROUND_COLOURS",
    "DIVERSITY_PROMPTS",
    "EVALUATION_FRAMES",
    "HELD_OUT",
    "TRAINING_FRAMES",
    "UNDERSPECIFIED_KINDS",
    "complete_prompt",
    "complete_scene",
    "describe",
    "everyday_caption",
    "is_held_out",
    "sample_training_scene",
    "sample_underspecified_prompts",
    "world_distribution",
    "BARE_POSITION_PHRASES",
    "COLOURS",
    "OBJECT_COLOURS",
    "ONE_OBJECT_TEMPLATES",
    "POSITIONS",
    "POSITION_PHRASES",
    "PartialShape",
    "PromptSpec",
    "SHAPES",
    "SIZES",
    "SIZE_FRACTION",
    "Scene",
    "ShapeSpec",
    "ShapesDataset",
    "ShapesItem",
    "TWO_OBJECT_TEMPLATES",
    "caption",
    "caption_with_template",
    "parse_caption",
    "render",
    "sample_prompts",
    "sample_scene",
)
