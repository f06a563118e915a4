"""Training the conditional VAE: the family's part of Loom's training workflow."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from pydantic import Field

from loom.core.training import Trainer, TrainerOptions, warmup_cosine
from loom.plugins.common.nn import SOUND_CHANNELS

from .model import ConditionalVAE, VAEConfig, save


class VAEOptions(TrainerOptions):
    prior_weight: float = Field(1.0, ge=0, description="weight of the prior-sample reconstruction loss")
    latent_dim: int = Field(8, ge=1, description="size of the latent z")


class VAETrainer(Trainer):
    family = "vae"
    image_size = 64
    Options = VAEOptions

    def __init__(self, options: VAEOptions, generator: torch.Generator) -> None:
        super().__init__(options, generator)
        cfg = self.model_config(options)
        self.model = ConditionalVAE(cfg).to(memory_format=torch.channels_last).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=options.lr, weight_decay=0.0)

    def model_config(self, options: VAEOptions) -> VAEConfig:
        return VAEConfig(prior_weight=options.prior_weight, latent_dim=options.latent_dim, image_size=self.image_size)

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

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict()}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])

    def export(self, folder: Path, training: dict) -> None:
        self.model.cfg = replace(self.model.cfg, training=training)
        save(self.model, folder)

    def sample(self, tokens, mask, pooled, generators):
        self.model.eval()
        images = self.model.generate(tokens, mask, pooled, generators)
        self.model.train()
        return images


class VAESoundTrainer(VAETrainer):
    """The same VAE on Sounds: 1×64×96 log-mel spectrograms (64 mels × the 94 frames of a 1.5 s
    clip, padded), decoded from a 4×6 seed; the config records the mel layout for generation."""

    family = "vae-sound"
    modality = "sounds"
    sample_shape = (1, 64, 96)

    def model_config(self, options: VAEOptions) -> VAEConfig:
        from loom.plugins.common.mel import MelImage

        return VAEConfig(
            family=self.family, prior_weight=options.prior_weight, latent_dim=options.latent_dim,
            sample_shape=list(self.shape()), channels=list(SOUND_CHANNELS),
            mel=MelImage(frames=self.shape()[2]).model_dump(),
        )
