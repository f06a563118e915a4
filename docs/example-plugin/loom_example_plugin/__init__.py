"""An example Loom plugin: one postprocessor, ``frame``, that draws a border around images."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

import loom
from loom.core import Capabilities, ComponentConfig, Image, InputError, Postprocessor

#: The Loom plugin API this plugin was written for; Loom refuses it, by name, if it cannot serve it.
LOOM_PLUGIN_API = "1.4"

COLOURS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "gold": (0.85, 0.65, 0.13)}


class Frame(Postprocessor):
    """Paints a solid border ``width`` pixels wide around every image."""

    description = "image → image with a solid frame"
    # What it promises; Loom's conformance kit (loom.testing) checks each promise.
    capabilities = Capabilities(
        deterministic=True, uses_seed=False, batchable=True, devices=("cpu",), has_weights=False
    )

    class Config(ComponentConfig):
        width: int = Field(4, ge=1, le=64, description="border width in pixels")
        colour: Literal["white", "black", "gold"] = "gold"

    input_type = Image
    output_type = Image
    # A per-pixel operation: an item's output cannot depend on its batch, so run batches whole.
    micro_batch = None

    def run(self, inputs: Image, generators: list) -> Image:
        import torch  # heavy imports stay inside run(), so `loom plugins` stays fast

        if inputs.pixels.shape[1] != 3:
            raise InputError(f"frame takes RGB images (B×3×H×W), got {tuple(inputs.pixels.shape)}")
        px = inputs.pixels.clone()
        w = self.config.width
        colour = torch.tensor(COLOURS[self.config.colour], dtype=px.dtype).view(1, 3, 1, 1)
        px[:, :, :w, :] = colour
        px[:, :, -w:, :] = colour
        px[:, :, :, :w] = colour
        px[:, :, :, -w:] = colour
        return Image(px)


@loom.hookimpl
def loom_register_components(register):
    register("frame", Frame)
