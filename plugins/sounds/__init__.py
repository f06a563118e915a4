"""Sounds: a small procedural text-to-audio world with an automatic checker, the audio twin of Shapes.

A clip holds one to three beeps of one pitch (low, medium, high), timbre (pure tone, buzz, hiss)
and motion (steady, rising, falling). :class:`SoundsDataset` yields (waveform, caption, sound)
items deterministically from a seed, :func:`parse_caption` reads captions back, and
:class:`SoundsEval` scores any clip against a prompt attribute by attribute, so a generator's
output can be graded without a learned judge. Only numpy is imported.
"""

from .evaluate import ANALYSIS_RATE, ATTRIBUTES, PITCH_BOUNDS, EvalReport, PromptScore, SoundsEval, analyse
from .world import (
    COUNTS,
    DURATION,
    MOTIONS,
    PITCH_HZ,
    PITCHES,
    SAMPLE_RATE,
    TEMPLATES,
    TIMBRES,
    Layout,
    PartialSound,
    Sound,
    SoundsDataset,
    SoundsItem,
    caption,
    caption_with_template,
    layout,
    parse_caption,
    render,
    sample_prompts,
    sample_sound,
)

__all__ = [
    "ANALYSIS_RATE", "ATTRIBUTES", "COUNTS", "DURATION", "EvalReport", "Layout", "MOTIONS", "PITCHES", "PITCH_BOUNDS",
    "PITCH_HZ", "PartialSound", "PromptScore", "SAMPLE_RATE", "Sound", "SoundsDataset", "SoundsEval", "SoundsItem",
    "TEMPLATES", "TIMBRES", "analyse", "caption", "caption_with_template", "layout", "parse_caption", "render",
    "sample_prompts", "sample_sound",
]
