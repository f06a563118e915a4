"""Conditional VAE generators: text embedding → 64×64 image ("vae"), and text embedding → 1.5 s
sound ("vae-sound", the same network on log-mel spectrograms of Loom's Sounds).

The default weights ship in ``weights/`` (config.json + model.safetensors), trained by
``loom train vae`` on the procedural Shapes world; ``weights/TRAINING.md`` holds the command and
seed that made them; the sound model's ship in ``sound_weights/``. This module imports no torch:
the network lives in :mod:`.model` and loads on first use.
"""

from __future__ import annotations

from pathlib import Path

from loom.core import hookimpl
from loom.plugins.common import SoundOutput, TrainedGenerator

LOOM_PLUGIN_API = "1.0"


class VAEGenerator(TrainedGenerator):
    """Samples images from a conditional VAE given text embeddings (``temperature`` scales z)."""

    description = "text embedding → 64×64 image (conditional VAE trained on Shapes)"
    family = "vae"
    default_weights = Path(__file__).parent / "weights"
    trainer = "loom.plugins.vae.training:VAETrainer"
    # trained on captions that state every attribute: a typed prompt is completed first
    prompt_completion = "complete-shapes-prompt"

    @classmethod
    def model_class(cls):
        from .model import ConditionalVAE

        return ConditionalVAE


class VAESoundGenerator(SoundOutput, VAEGenerator):
    """Samples 1.5 s sounds from a conditional VAE trained on Sounds log-mel spectrograms (Griffin-Lim
    turns them into 16 kHz waveforms; ``temperature`` scales z)."""

    description = "text embedding → 1.5 s, 16 kHz sound (conditional VAE on log-mel spectrograms, trained on Sounds)"
    family = "vae-sound"
    default_weights = Path(__file__).parent / "sound_weights"
    trainer = "loom.plugins.vae.training:VAESoundTrainer"


@hookimpl
def loom_register_components(register):
    register("vae", VAEGenerator)
    register("vae-sound", VAESoundGenerator)
