"""Image postprocessors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from loom.core import Capabilities, ComponentConfig, Image, Postprocessor, hookimpl

#: The plugin API this plugin is written for (see loom.core.hookspecs).
LOOM_PLUGIN_API = "1.4"


class Resize(Postprocessor):
    """Resizes images so that their longer side is ``size`` pixels (Shapes models draw at 64×64,
    which is a postage stamp on screen)."""

    description = "image → image resized (default 256 px, bicubic)"
    capabilities = Capabilities(uses_seed=False)

    class Config(ComponentConfig):
        size: int = Field(256, ge=8, le=8192, description="length of the longer side, in pixels")
        mode: Literal["nearest", "bilinear", "bicubic", "area"] = "bicubic"

    input_type = Image
    output_type = Image
    # each image alone: resizing gains nothing from a batch, and padded copies of a large output cost memory
    micro_batch = 1

    def run(self, inputs: Image, generators: list) -> Image:
        from torch.nn import functional as F

        px = inputs.pixels
        h, w = px.shape[-2:]
        scale = self.config.size / max(h, w)
        target = (max(1, round(h * scale)), max(1, round(w * scale)))
        if target == (h, w):
            return inputs
        kwargs = {"align_corners": False, "antialias": True} if self.config.mode in ("bilinear", "bicubic") else {}
        return Image(F.interpolate(px, size=target, mode=self.config.mode, **kwargs).clamp_(0, 1))  # in place: one copy


@hookimpl
def loom_register_components(register):
    register("resize", Resize)
