"""Training the conditional VAE: the family's part of Loom's training workflow."""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from loom.core.training import TrainerOptions
from loom.plugins.common.nn import sound_config
from loom.plugins.common.training import SavedModelTrainer, warmup_cosine

from .model import ConditionalVAE, VAEConfig

#: the options that shape the model default to the model's own defaults, so the two cannot drift apart
_MODEL = VAEConfig()


class VAEOptions(TrainerOptions):
    prior_weight: float = Field(_MODEL.prior_weight, ge=0, description="weight of the prior-sample reconstruction loss")
    prior_samples: int = Field(
        4, ge=1, le=32, description="prior latents per image in the prior loss; only the closest decode counts"
    )
    latent_dim: int = Field(_MODEL.latent_dim, ge=1, description="size of the latent z")
    recon_sigma: float = Field(
        _MODEL.recon_sigma,
        gt=0,
        description="σ of the Gaussian likelihood: larger weighs the KL term more against reconstruction",
    )


def _shared_config(options: VAEOptions) -> dict:
    """The model config fields every VAE family takes from its training options."""
    return {name: getattr(options, name) for name in ("prior_weight", "latent_dim", "recon_sigma")}


class VAETrainer(SavedModelTrainer):
    family = "vae"
    Options = VAEOptions

    def __init__(self, options: VAEOptions, generator: torch.Generator) -> None:
        super().__init__(options, generator)
        self.model = ConditionalVAE(self.model_config(options)).to(memory_format=torch.channels_last).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=options.lr, weight_decay=0.0)

    def model_config(self, options: VAEOptions) -> VAEConfig:
        return VAEConfig(**_shared_config(options), prior_samples=options.prior_samples, image_size=self.image_size)

    def step(self, batch, progress: float) -> dict[str, float]:
        lr = warmup_cosine(self.options.lr, progress)
        for group in self.opt.param_groups:
            group["lr"] = lr
        x = batch.images.contiguous(memory_format=torch.channels_last)
        loss, parts = self.model.loss(x, batch.tokens, batch.mask, batch.pooled, generator=self.generator)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step()
        return {"loss": loss.item(), **parts}

    def sample(self, tokens, mask, pooled, generators):
        self.model.eval()
        images = self.model.generate(tokens, mask, pooled, generators)
        self.model.train()
        return images


class VAESoundOptions(VAEOptions):
    latent_spread: float = Field(
        0.6, gt=0, description="width of the sampling Gaussian relative to the fitted posterior spread"
    )


class VAESoundTrainer(VAETrainer):
    """The same VAE on Sounds: 1×64×96 log-mel spectrograms (64 mels × the 94 frames of a 1.5 s
    clip, padded), decoded from a 4×6 seed; the config records the mel layout for generation.

    Sampling draws z from a Gaussian fitted to the posterior means (a running average over the
    training batches, exported as ``latent_mean``/``latent_chol``) instead of N(0, I): on Sounds
    the posterior means spread ~4× wider than the prior, whose samples then decode to a blur of
    every timing (measured on a 1,094-step run, 60 fresh captions: whole caption 0.18 from the
    prior, 0.47 from the fitted Gaussian at spread 0.6, 0.38 at 0.8, 0.32 at 0.4)."""

    family = "vae-sound"
    modality = "sounds"
    sample_shape = (1, 64, 96)
    Options = VAESoundOptions
    #: decay of the running posterior statistics per step
    STATS_DECAY = 0.99

    def __init__(self, options: VAESoundOptions, generator: torch.Generator) -> None:
        super().__init__(options, generator)
        self.latent_stats: dict | None = None

    def model_config(self, options: VAESoundOptions) -> VAEConfig:
        shape = sound_config(self.family, self.shape())
        return VAEConfig(**shape, **_shared_config(options), latent_spread=options.latent_spread)

    def step(self, batch, progress: float) -> dict[str, float]:
        losses = super().step(batch, progress)
        with torch.no_grad():
            cond = self.model.condition(batch.tokens, batch.mask, batch.pooled)
            mu, _ = self.model.encode(batch.images.contiguous(memory_format=torch.channels_last), cond)
        mean, second = mu.mean(0), (mu.T @ mu) / len(mu)
        if self.latent_stats is None:
            self.latent_stats = {"mean": mean, "second": second}
        else:
            d = self.STATS_DECAY
            self.latent_stats = {
                "mean": d * self.latent_stats["mean"] + (1 - d) * mean,
                "second": d * self.latent_stats["second"] + (1 - d) * second,
            }
        return losses

    def state(self) -> dict:
        return {**super().state(), "latent_stats": self.latent_stats}

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.latent_stats = state.get("latent_stats")  # None in a checkpoint from before the fit

    def _fit_latent(self) -> None:
        if self.latent_stats is None:
            return
        mean, second = self.latent_stats["mean"], self.latent_stats["second"]
        cov = second - torch.outer(mean, mean)
        chol = torch.linalg.cholesky(cov + 1e-4 * torch.eye(len(mean)))
        self.model.cfg = self.model.cfg.model_copy(update={"latent_mean": mean.tolist(), "latent_chol": chol.tolist()})

    def export(self, folder: Path, training: dict) -> None:
        self._fit_latent()
        super().export(folder, training)

    def sample(self, tokens, mask, pooled, generators):
        self._fit_latent()
        return super().sample(tokens, mask, pooled, generators)
