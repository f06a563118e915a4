"""Shapes: a small procedural text-to-image world with an automatic checker.

Scenes are one or two coloured circles, squares or triangles in a 3×3 grid on a coloured
background. :class:`ShapesDataset` yields (image, caption, scene) items deterministically from a
seed, :func:`parse_caption` reads captions back into specs, and :class:`ShapesEval` scores any
image against a prompt attribute by attribute, so a generator's output can be graded without a
learned judge. As a Loom plugin (entry point ``shapes``) it registers the world
:class:`ShapesWorld`, whose training set is :class:`ShapesData`; :mod:`.edits` holds its edit
tasks (recolour, repaint, keep) for ``loom eval edits``.
"""

from . import edits, world
from .edits import *  # noqa: F403  (re-exports edits.__all__)
from .evaluate import ATTRIBUTES, EvalReport, PromptScore, ShapesEval
from .plugin import LOOM_PLUGIN_API, SHAPES_SAMPLE_PROMPTS, ShapesData, ShapesWorld, loom_register_worlds
from .world import *  # noqa: F403  (re-exports world.__all__)

__all__ = [
    *world.__all__,
    *edits.__all__,
    "LOOM_PLUGIN_API",
    "SHAPES_SAMPLE_PROMPTS",
    "ShapesData",
    "ShapesWorld",
    "loom_register_worlds",
    "ATTRIBUTES",
    "EvalReport",
    "PromptScore",
    "ShapesEval",
]
