"""The conditional VAE network (imports torch; loaded only when the generator loads)."""

from __future__ import annotations

import torch
from torch import nn

from loom.plugins.common.nn import (
    Condition,
    ConditionalDecoder,
    ConditionalDecoderConfig,
    TextCondition,
    closest_of,
    sample_shape,
    seed_shape,
)
from loom.plugins.common.saved import SavedModel


class VAEConfig(ConditionalDecoderConfig):
    """Architecture of a :class:`ConditionalVAE`; saved as config.json beside the weights."""

    family: str = "vae"
    latent_dim: int = 8
    recon_sigma: float = 0.1
    #: weight of the reconstruction loss for a latent drawn from the prior (see ``loss``)
    prior_weight: float = 1.0
    #: prior latents drawn per image for that loss, of which only the closest decode counts
    #: (``closest_of``): 1 teaches the average of every image a caption allows
    prior_samples: int = 1
    #: A Gaussian fitted to the posterior means of the training data (mean, Cholesky factor of the
    #: covariance), which sampling draws z from, ``latent_spread`` times as wide; None: z ~ N(0, I).
    #: Measured on Sounds: the posterior means spread ~4× wider than N(0, I), so prior samples fall
    #: between them and decode to the blurred average clip (beeps merged, glides flattened).
    latent_mean: list[float] | None = None
    latent_chol: list[list[float]] | None = None
    latent_spread: float = 1.0
    training: dict = {}


class ConditionalVAE(SavedModel):
    """A conditional VAE: q(z | image, text) and p(image | z, text), z ~ N(0, I) at sampling."""

    config_class = VAEConfig

    def __init__(self, cfg: VAEConfig):
        super().__init__(cfg)
        ch = cfg.channels
        shape = sample_shape(cfg)
        if cfg.sample_shape is None and cfg.image_size != 8 * 2 ** (len(ch) - 1):
            raise ValueError(f"image_size {cfg.image_size} does not fit {len(ch)} channel entries (4 × 2^n, then ×2)")
        seed = seed_shape(shape, len(ch))
        self.condition = TextCondition(cfg.text_dim, cfg.width, cfg.queries, cfg.cond_dim)
        # Posterior encoder: the decoder's channel plan in reverse, stride-2 convolutions.
        enc, cin = [], shape[0]
        for cout in reversed(ch):
            enc += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU()]
            cin = cout
        self.encoder = nn.Sequential(*enc)
        self.posterior = nn.Linear(cin * seed[0] * seed[1] + cfg.cond_dim, 2 * cfg.latent_dim)
        self.decoder = ConditionalDecoder(cfg.latent_dim, cfg.cond_dim, cfg.width, ch, seed, shape[0])

    def encode(self, images, cond: Condition):
        h = self.encoder(images * 2 - 1).flatten(1)
        mu, logvar = self.posterior(torch.cat([h, cond.vector], dim=1)).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def decode(self, z, cond: Condition):
        return self.decoder(z, cond)

    def loss(self, images, tokens, mask, pooled, generator=None):
        """Negative ELBO per image (Gaussian likelihood with ``recon_sigma``), and its parts."""
        cond = self.condition(tokens, mask, pooled)
        mu, logvar = self.encode(images, cond)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device)
        z = mu + eps * torch.exp(0.5 * logvar)
        recon = self.decode(z, cond)
        scale = 1 / (2 * self.cfg.recon_sigma**2)
        rec = ((recon - images) ** 2).flatten(1).sum(1).mean() * scale
        kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)).mean()
        # The posterior sees the image, so on its own the decoder learns to read the objects from z
        # and ignore the text (measured: position at chance). Decoding a prior sample against the
        # same image forces the content to come from the text, leaving z only the jitter.
        k = self.cfg.prior_samples
        z_prior = torch.randn((k * mu.shape[0], mu.shape[1]), generator=generator, device=mu.device)
        prior = closest_of(self.decode(z_prior, cond.repeat(k)), images).mean() * scale
        total = rec + kl + self.cfg.prior_weight * prior
        return total, {"recon": rec.item(), "kl": kl.item(), "prior": prior.item()}

    @torch.no_grad()
    def generate(self, tokens, mask, pooled, generators, temperature: float = 1.0):
        """Images for the caption embeddings, item i's latent drawn from ``generators[i]``."""
        noise = torch.stack([torch.randn(self.cfg.latent_dim, generator=g) for g in generators]).to(tokens.device)
        z = noise * temperature
        if self.cfg.latent_mean is not None:
            chol = torch.tensor(self.cfg.latent_chol, dtype=z.dtype, device=z.device)
            z = torch.tensor(self.cfg.latent_mean, dtype=z.dtype, device=z.device) + self.cfg.latent_spread * (
                z @ chol.T
            )
        return self.decode(z, self.condition(tokens, mask, pooled))
