"""Shapes: a small procedural text-to-image world with an automatic checker.

Scenes are one or two coloured circles, squares or triangles in a 3×3 grid on a coloured
background. :class:`ShapesDataset` yields (image, caption, scene) items deterministically from a
seed, :func:`parse_caption` reads captions back into specs, and :class:`ShapesEval` scores any
image against a prompt attribute by attribute, so a generator's output can be graded without a
learned judge.
"""

from .evaluate import ATTRIBUTES, EvalReport, PromptScore, ShapesEval
from .world import (
    BACKGROUND_COLOURS,
    BARE_POSITION_PHRASES,
    COLOURS,
    OBJECT_COLOURS,
    ONE_OBJECT_TEMPLATES,
    POSITION_PHRASES,
    POSITIONS,
    SHAPES,
    SIZE_FRACTION,
    SIZES,
    TWO_OBJECT_TEMPLATES,
    PartialShape,
    PromptSpec,
    Scene,
    ShapesDataset,
    ShapesItem,
    ShapeSpec,
    caption,
    caption_with_template,
    parse_caption,
    render,
    sample_prompts,
    sample_scene,
)

__all__ = [
    "ATTRIBUTES",
    "BACKGROUND_COLOURS",
    "BARE_POSITION_PHRASES",
    "COLOURS",
    "EvalReport",
    "OBJECT_COLOURS",
    "ONE_OBJECT_TEMPLATES",
    "POSITION_PHRASES",
    "POSITIONS",
    "PartialShape",
    "PromptScore",
    "PromptSpec",
    "SHAPES",
    "SIZE_FRACTION",
    "SIZES",
    "Scene",
    "ShapeSpec",
    "ShapesDataset",
    "ShapesEval",
    "ShapesItem",
    "TWO_OBJECT_TEMPLATES",
    "caption",
    "caption_with_template",
    "parse_caption",
    "render",
    "sample_prompts",
    "sample_scene",
]
