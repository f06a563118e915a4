"""Previews (plugin API 1.7): a step reports the batch as it stands through ``report_progress(..., preview=make)``;
``Pipeline.run(preview=..., preview_every=...)`` is told it at the caller's rate, and asking for previews changes
nothing the run makes."""

from __future__ import annotations

import numpy as np
import pytest

from loom import Pipeline
from loom.core import Image, Text

PROMPTS = ["a small red circle on a blue background", "a big yellow triangle", "a green square at the top"]
STEPS = 4


@pytest.fixture(scope="module")
def diffusion():
    return Pipeline.from_steps("text-encoder", ("diffusion", {"steps": STEPS})).load(progress=False)


def test_each_step_previews_the_batch_and_the_output_is_unchanged(diffusion):
    plain = diffusion.run(PROMPTS, 5, progress=False).output.to_numpy()
    seen: list[tuple[Image, list[int]]] = []
    out = diffusion.run(
        PROMPTS, 5, progress=False, preview=lambda data, items: seen.append((data, items)), preview_every=0
    )
    assert np.array_equal(out.output.to_numpy(), plain), "asking for previews changed the images"
    assert len(seen) == STEPS, "one preview per denoising step at preview_every=0"
    for data, items in seen:
        assert isinstance(data, Image) and len(data) == len(PROMPTS) and items == [0, 1, 2]
        assert data.problem() is None
    # the last step's guess is the image the run gives (before its final clamp and quantisation)
    last = seen[-1][0].to_numpy().astype(int)
    assert np.abs(last - plain.astype(int)).mean() < 2.0
    first = seen[0][0].to_numpy().astype(int)
    assert np.abs(first - plain.astype(int)).mean() > np.abs(last - plain.astype(int)).mean()


def test_previews_come_at_most_at_the_callers_rate(diffusion):
    seen = []
    diffusion.run(PROMPTS[:1], 5, progress=False, preview=lambda data, items: seen.append(items), preview_every=3600)
    assert seen == [[0]], "the first preview comes at once, the next not before an hour"


def test_a_step_without_previews_is_never_asked(diffusion):
    made = []
    vae = Pipeline.from_steps("text-encoder", "vae")
    vae.run(PROMPTS, 1, progress=False, preview=lambda data, items: made.append(items), preview_every=0)
    assert made == []


def test_a_micro_batched_step_previews_each_chunk_without_its_padding():
    from loom.core import Component

    class Counting(Component):
        """Text in, Text out, two items per call, a preview of the chunk at its one step."""

        input_type = output_type = Text
        micro_batch = 2

        def run(self, inputs, generators):
            out = Text([f"{t}!" for t in inputs.items])
            self.report_progress(1, 1, "step", preview=lambda: out)
            return out

    seen = []
    Counting()(Text(["a", "b", "c"]), 0, preview=lambda make, items: seen.append((make().items, items)))
    assert seen == [(["a!", "b!"], [0, 1]), (["c!"], [2])]
