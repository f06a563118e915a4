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

from .evaluate import (
    ANALYSIS_RATE,
    ATTRIBUTES,
    DIVERSITY_PROMPTS,
    PITCH_BOUNDS,
    DiversityReport,
    EvalReport,
    PromptScore,
    SoundsEval,
    analyse,
    diversity,
)
from .plugin import LOOM_PLUGIN_API, SOUNDS_SAMPLE_PROMPTS, SoundsData, SoundsWorld, loom_register_worlds
from .world import (
    COMBINATIONS,
    COUNTS,
    DISTRIBUTION,
    DURATION,
    EVALUATION_FRAMES,
    FULL_CAPTION_SHARE,
    HELD_OUT,
    MOTIONS,
    PITCH_HZ,
    PITCHES,
    SAMPLE_RATE,
    STATE_RATES,
    TEMPLATES,
    TIMBRES,
    TRAINING_FRAMES,
    UNDERSPECIFIED_KINDS,
    Layout,
    PartialSound,
    Sound,
    SoundsDataset,
    SoundsItem,
    caption,
    caption_with_template,
    describe,
    everyday_caption,
    is_held_out,
    layout,
    parse_caption,
    render,
    sample_prompts,
    sample_sound,
    sample_training_sound,
    sample_underspecified_prompts,
)

__all__ = [
    "LOOM_PLUGIN_API",
    "SOUNDS_SAMPLE_PROMPTS",
    "SoundsData",
    "SoundsWorld",
    "loom_register_worlds",
    "ANALYSIS_RATE",
    "ATTRIBUTES",
    "COMBINATIONS",
    "COUNTS",
    "DISTRIBUTION",
    "DIVERSITY_PROMPTS",
    "DURATION",
    "DiversityReport",
    "EVALUATION_FRAMES",
    "EvalReport",
    "FULL_CAPTION_SHARE",
    "HELD_OUT",
    "Layout",
    "MOTIONS",
    "PITCHES",
    "PITCH_BOUNDS",
    "PITCH_HZ",
    "PartialSound",
    "PromptScore",
    "SAMPLE_RATE",
    "STATE_RATES",
    "Sound",
    "SoundsDataset",
    "SoundsEval",
    "SoundsItem",
    "TEMPLATES",
    "TIMBRES",
    "TRAINING_FRAMES",
    "UNDERSPECIFIED_KINDS",
    "analyse",
    "caption",
    "caption_with_template",
    "describe",
    "diversity",
    "everyday_caption",
    "is_held_out",
    "layout",
    "parse_caption",
    "render",
    "sample_prompts",
    "sample_sound",
    "sample_training_sound",
    "sample_underspecified_prompts",
]
