"""Conditional VAE generator: text embedding → 64×64 image.

The default weights ship in ``weights/`` (config.json + model.safetensors), trained by
``loom train vae`` on the procedural Shapes world; ``weights/TRAINING.md`` holds the command and
seed that made them. This module imports no torch: the network lives in :mod:`.model` and loads
on first use.
"""

from __future__ import annotations

from pathlib import Path

from loom.core import hookimpl
from loom.plugins.common import TrainedGenerator

LOOM_PLUGIN_API = "1.0"

class VAEGenerator(TrainedGenerator):
    """Samples images from a conditional VAE given text embeddings (``temperature`` scales z)."""

    description = "text embedding → 64×64 image (conditional VAE trained on Shapes)"
    family = "vae"
    default_weights = Path(__file__).parent / "weights"
    model_module = "loom.plugins.vae.model"
    trainer = "loom.plugins.vae.training:VAETrainer"


@hookimpl
def loom_register_components(register):
    register("vae", VAEGenerator)
