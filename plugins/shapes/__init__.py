"""Shapes: a small procedural text-to-image world with an automatic checker.

Scenes are one or two coloured circles, squares or triangles in a 3×3 grid on a coloured
background. :class:`ShapesDataset` yields (image, caption, scene) items deterministically from a
seed, :func:`parse_caption` reads captions back into specs, and :class:`ShapesEval` scores any
image against a prompt attribute by attribute, so a generator's output can be graded without a
learned judge. As a Loom plugin (entry point ``shapes``) it registers the world
:class:`ShapesWorld`, whose training set is :class:`ShapesData`.
"""

from .evaluate import ATTRIBUTES, EvalReport, PromptScore, ShapesEval
from .plugin import LOOM_PLUGIN_API, SHAPES_SAMPLE_PROMPTS, ShapesData, ShapesWorld, loom_register_worlds
from .world import (
    BACKGROUND_COLOURS,
    BARE_POSITION_PHRASES,
    COLOURS,
    DIVERSITY_PROMPTS,
    EVALUATION_FRAMES,
    HELD_OUT,
    OBJECT_COLOURS,
    ONE_OBJECT_TEMPLATES,
    POSITION_PHRASES,
    POSITIONS,
    SHAPES,
    SIZE_FRACTION,
    SIZES,
    TRAINING_FRAMES,
    TWO_OBJECT_TEMPLATES,
    UNDERSPECIFIED_KINDS,
    PartialShape,
    PromptSpec,
    Scene,
    ShapesDataset,
    ShapesItem,
    ShapeSpec,
    caption,
    caption_with_template,
    describe,
    everyday_caption,
    is_held_out,
    parse_caption,
    render,
    sample_prompts,
    sample_scene,
    sample_training_scene,
    sample_underspecified_prompts,
    world_distribution,
)

__all__ = [
    "LOOM_PLUGIN_API", "SHAPES_SAMPLE_PROMPTS", "ShapesData", "ShapesWorld", "loom_register_worlds",
    "ATTRIBUTES", "BACKGROUND_COLOURS", "BARE_POSITION_PHRASES", "COLOURS", "DIVERSITY_PROMPTS",
    "EVALUATION_FRAMES", "EvalReport", "HELD_OUT", "OBJECT_COLOURS", "ONE_OBJECT_TEMPLATES", "POSITIONS",
    "POSITION_PHRASES", "PartialShape", "PromptScore", "PromptSpec", "SHAPES", "SIZES", "SIZE_FRACTION",
    "Scene", "ShapeSpec", "ShapesDataset", "ShapesEval", "ShapesItem", "TRAINING_FRAMES",
    "TWO_OBJECT_TEMPLATES", "UNDERSPECIFIED_KINDS", "caption", "caption_with_template", "describe",
    "everyday_caption", "is_held_out", "parse_caption", "render", "sample_prompts", "sample_scene",
    "sample_training_scene", "sample_underspecified_prompts", "world_distribution",
]
