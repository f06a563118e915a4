"""Prompt completion for generators that read only full captions.

The fast families were trained on captions that state every attribute; a prompt that leaves the
size, the position or the background unsaid (or a sound's pitch, timbre, count or motion) is
outside all they saw. A completion component rewrites such a prompt into a full caption of its
world, drawing what the prompt leaves open from the world's own distribution with the item's
seed: the same prompt and seed give the same output, and different seeds spread over what was
left open. Text that is not a prompt of the world passes unchanged. Generators name theirs in
``Generator.prompt_completion``; ``loom generate`` puts it first in the chain.
"""

from __future__ import annotations

import importlib
from typing import ClassVar

from loom.core import Postprocessor, Text, hookimpl

#: The plugin API this plugin is written for (see loom.core.hookspecs).
LOOM_PLUGIN_API = "1.0"


class PromptCompletion(Postprocessor):
    """Text → the same text as a full caption of ``world`` (a module with
    ``complete_prompt(text, rng)``), unsaid attributes drawn with the item's seed."""

    input_type = Text
    output_type = Text
    world: ClassVar[str]

    def run(self, inputs: Text, generators: list) -> Text:
        import numpy as np
        import torch

        complete = importlib.import_module(self.world).complete_prompt
        texts = []
        for text, generator in zip(inputs.items, generators):
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            texts.append(complete(text, np.random.default_rng(seed)))
        return Text(texts)


class CompleteShapesPrompt(PromptCompletion):
    """A Shapes prompt as a full caption: unsaid size, position, background or colour drawn."""

    description = "text → text: a Shapes prompt with what it leaves unsaid drawn from the world (seeded)"
    world = "loom.plugins.shapes.world"


class CompleteSoundsPrompt(PromptCompletion):
    """A Sounds prompt as a full caption: unsaid pitch, timbre, count or motion drawn."""

    description = "text → text: a Sounds prompt with what it leaves unsaid drawn from the world (seeded)"
    world = "loom.plugins.sounds.world"


@hookimpl
def loom_register_components(register):
    register("complete-shapes-prompt", CompleteShapesPrompt)
    register("complete-sounds-prompt", CompleteSoundsPrompt)
