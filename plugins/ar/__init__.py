"""Autoregressive generator: text embedding → image tokens → 64×64 image (the DALL·E / Parti recipe).

A VQ-VAE tokenizer turns a 64×64 image into a 16×16 grid of codebook indices (8×8 with a fourth
entry in ``vq_channels``); a small transformer predicts those indices one by one, cross-attending
to the caption's token states, and is sampled with ``temperature`` and ``top_k`` through a
key/value cache (each new token costs one position, not the whole prefix again). The default
weights ship in ``weights/``; ``weights/TRAINING.md`` holds the commands and seeds.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from loom.core import hookimpl
from loom.plugins.common import TrainedConfig, TrainedGenerator

LOOM_PLUGIN_API = "1.0"


class ARGenerator(TrainedGenerator):
    """Samples image tokens with a transformer and decodes them with the VQ-VAE tokenizer."""

    description = "text embedding → 16×16 image tokens → 64×64 image (VQ-VAE + transformer)"
    family = "ar"
    default_weights = Path(__file__).parent / "weights"
    trainer = "loom.plugins.ar.training:ARTrainer"

    class Config(TrainedConfig):
        # guidance 2 and temperature 0.7 scored best on the 8×8 model (100 prompts); on the 16×16 one
        # (runs/ar10, validation prompts) temperatures 0.2-0.7 tied, guidance 1.5 tied with 2, and
        # 3 or more threw positions off (docs/families.md)
        temperature: float = Field(0.7, ge=0.0, le=3.0, description="scale of the sampling noise")
        top_k: int = Field(16, ge=0, description="sample among the k likeliest tokens (0: all)")
        guidance_scale: float = Field(2.0, ge=1.0, description="classifier-free guidance (1: none)")

    def sampling_options(self) -> dict:
        return {"top_k": self.config.top_k, "guidance_scale": self.config.guidance_scale}

    @classmethod
    def model_class(cls):
        from .model import ARModel

        return ARModel


@hookimpl
def loom_register_components(register):
    register("ar", ARGenerator)
