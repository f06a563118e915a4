"""The conditional GAN's networks (imports torch; loaded only when the generator loads or trains)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from loom.plugins.common.nn import (
    Condition,
    ConditionalDecoder,
    ConditionalDecoderConfig,
    SpatialCrossAttention,
    TextCondition,
    sample_shape,
    seed_shape,
)
from loom.plugins.common.saved import SavedModel


class GANConfig(ConditionalDecoderConfig):
    """Architecture of the GAN; saved as config.json beside the (EMA) generator weights."""

    family: str = "gan"
    noise_dim: int = 32
    #: discriminator channels at 32, 16, 8 and 4 pixels
    d_channels: list[int] = [32, 64, 128, 128]
    training: dict = {}


class GANGenerator(SavedModel):
    """The generator, what a trained folder holds (the exponential moving average of its weights)."""

    config_class = GANConfig

    def __init__(self, cfg: GANConfig):
        super().__init__(cfg)
        self.condition = TextCondition(cfg.text_dim, cfg.width, cfg.queries, cfg.cond_dim)
        shape = sample_shape(cfg)
        seed = seed_shape(shape, len(cfg.channels))
        self.decoder = ConditionalDecoder(cfg.noise_dim, cfg.cond_dim, cfg.width, cfg.channels, seed, shape[0])

    def forward(self, z, tokens, mask, pooled):
        return self.decoder(z, self.condition(tokens, mask, pooled))

    @torch.no_grad()
    def generate(self, tokens, mask, pooled, generators, temperature: float = 1.0):
        """Images for the caption embeddings, item i's noise drawn from ``generators[i]``."""
        z = torch.stack([torch.randn(self.cfg.noise_dim, generator=g) for g in generators]).to(tokens.device)
        return self(z * temperature, tokens, mask, pooled)


class Discriminator(nn.Module):
    """Projection discriminator (Miyato & Koyama 2018) with spectral norm everywhere it is cheap,
    plus cross-attention from its 8×8 features to the caption tokens, so that it can check *where*
    each named object is, not only whether the image looks like the sentence overall."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        c = cfg.d_channels
        shape = sample_shape(cfg)
        h, w = seed_shape(shape, 4)  # the features after four stride-2 convolutions
        self.condition = TextCondition(cfg.text_dim, cfg.width, cfg.queries, cfg.cond_dim)
        layers, cin = [], shape[0]
        for cout in c[:3]:  # 64 → 32 → 16 → 8
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.cross = SpatialCrossAttention(c[2], 4 * h * w, cfg.width)
        self.down = nn.Sequential(spectral_norm(nn.Conv2d(c[2], c[3], 4, stride=2, padding=1)), nn.LeakyReLU(0.2))
        self.fc = spectral_norm(nn.Linear(c[3] * h * w, cfg.cond_dim))
        self.out = spectral_norm(nn.Linear(cfg.cond_dim, 1))
        self.embed = spectral_norm(nn.Linear(cfg.cond_dim, cfg.cond_dim))

    def forward(self, images, cond: Condition):
        h = self.cross(self.features(images * 2 - 1), cond)
        h = F.leaky_relu(self.fc(self.down(h).flatten(1)), 0.2)
        return self.out(h).squeeze(1) + (self.embed(cond.vector) * h).sum(1)
