"""Sounds: a small procedural text-to-audio world with an automatic checker, the audio twin of Shapes.

A clip holds one to three beeps of one pitch (low, medium, high), timbre (pure tone, buzz, hiss)
and motion (steady, rising, falling). :class:`SoundsDataset` yields (waveform, caption, sound)
items deterministically from a seed, :func:`parse_caption` reads captions back, and
:class:`SoundsEval` scores any clip against a prompt attribute by attribute, so a generator's
output can be graded without a learned judge. Models train on ``SoundsDataset(training=True)``:
everyday captions that leave attributes out, and no sound in a :data:`HELD_OUT` combination;
:func:`sample_underspecified_prompts` and :func:`diversity` check what a model does with what a
prompt leaves open. As a Loom plugin (entry point ``sounds``) it registers the world
:class:`SoundsWorld`, whose training set is :class:`SoundsData`. Torch is imported only when
training data is made.
"""

from . import evaluate, world
from .evaluate import *  # noqa: F403  (re-exports evaluate.__all__)
from .plugin import LOOM_PLUGIN_API, SOUNDS_SAMPLE_PROMPTS, SoundsData, SoundsWorld, loom_register_worlds
from .world import *  # noqa: F403  (re-exports world.__all__)

__all__ = [
    *world.__all__,
    *evaluate.__all__,
    "LOOM_PLUGIN_API",
    "SOUNDS_SAMPLE_PROMPTS",
    "SoundsData",
    "SoundsWorld",
    "loom_register_worlds",
]
