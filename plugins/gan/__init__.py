"""Conditional GAN generators: text embedding → 64×64 image ("gan"), and text embedding → 1.5 s
sound ("gan-sound", the same networks on log-mel spectrograms of Loom's Sounds).

A generator conditioned on the caption's token states (cross-attention) and sentence vector (FiLM),
trained against a spectral-normalised projection discriminator with a hinge loss, a matching-aware
term (real images with the wrong caption count as fake) and a reconstruction term toward the
real image of the same caption (MSE by default; L1 as in pix2pix is an option); the exported
weights are an exponential moving average of the generator's.
The default weights ship in ``weights/`` (the sound model's in ``sound_weights/``); each folder's
``TRAINING.md`` holds the command and seed.
"""

from __future__ import annotations

from pathlib import Path

from loom.core import hookimpl
from loom.plugins.common import SoundOutput, TrainedGenerator

LOOM_PLUGIN_API = "1.0"


class GANGenerator(TrainedGenerator):
    """Samples images from a conditional GAN given text embeddings (``temperature`` scales z)."""

    description = "text embedding → 64×64 image (conditional GAN trained on Shapes)"
    family = "gan"
    default_weights = Path(__file__).parent / "weights"
    trainer = "loom.plugins.gan.training:GANTrainer"
    # trained on captions that state every attribute: a typed prompt is completed first
    prompt_completion = "complete-shapes-prompt"

    @classmethod
    def model_class(cls):
        from .model import GANGenerator

        return GANGenerator


class GANSoundGenerator(SoundOutput, GANGenerator):
    """Samples 1.5 s sounds from a conditional GAN trained on Sounds log-mel spectrograms (Griffin-Lim
    turns them into 16 kHz waveforms; ``temperature`` scales z)."""

    description = "text embedding → 1.5 s, 16 kHz sound (conditional GAN on log-mel spectrograms, trained on Sounds)"
    family = "gan-sound"
    default_weights = Path(__file__).parent / "sound_weights"
    trainer = "loom.plugins.gan.training:GANSoundTrainer"


@hookimpl
def loom_register_components(register):
    register("gan", GANGenerator)
    register("gan-sound", GANSoundGenerator)
