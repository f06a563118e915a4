"""Training the conditional GAN: the family's part of Loom's training workflow."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch.nn import functional as F

from loom.core.training import Trainer, TrainerOptions
from loom.plugins.common.nn import closest_of, sound_config
from loom.plugins.common.training import warmup_cosine

from .model import Discriminator, GANConfig, GANGenerator


class GANOptions(TrainerOptions):
    lr: float = Field(5e-4, gt=0, description="peak learning rate of both networks")
    recon: Literal["mse", "l1"] = Field(
        "mse", description="reconstruction term: mse (the per-pixel mean) or l1 (the median, as in pix2pix)"
    )
    recon_weight: float = Field(100.0, ge=0, description="weight of the reconstruction term")
    recon_samples: int = Field(
        4, ge=1, le=32, description="noise draws per image in the reconstruction term; only the closest counts"
    )
    mismatch_weight: float = Field(0.5, ge=0, description="weight of real-image/wrong-caption pairs in the D loss")
    ema: float = Field(0.999, ge=0, lt=1, description="decay of the generator's weight average")


class GANTrainer(Trainer):
    family = "gan"
    Options = GANOptions

    def __init__(self, options: GANOptions, generator: torch.Generator) -> None:
        super().__init__(options, generator)
        cfg = self.model_config(options)
        self.g = GANGenerator(cfg).train()
        self.d = Discriminator(cfg).train()
        self.g_ema = copy.deepcopy(self.g).eval().requires_grad_(False)
        betas = (0.5, 0.99)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=options.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=options.lr, betas=betas)
        self.ema_steps = 0

    def model_config(self, options: GANOptions) -> GANConfig:
        return GANConfig(image_size=self.image_size)

    def step(self, batch, progress: float) -> dict[str, float]:
        lr = warmup_cosine(self.options.lr, progress)
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        real = batch.images
        b, k = real.shape[0], self.options.recon_samples
        z = torch.randn(k * b, self.g.cfg.noise_dim, generator=self.generator)
        # a caption from another item of the batch: a real image with it is a mismatched pair
        shift = int(torch.randint(1, b, (1,), generator=self.generator)) if b > 1 else 0
        wrong = torch.roll(torch.arange(b), shift)

        # discriminator: hinge loss on real, fake and mismatched pairs
        cond_d = self.d.condition(batch.tokens, batch.mask, batch.pooled)
        with torch.no_grad():
            fake = self.g(z[:b], batch.tokens, batch.mask, batch.pooled)
        d_real = self.d(real, cond_d)
        d_fake = self.d(fake, cond_d)
        loss_d = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        if self.options.mismatch_weight and b > 1:
            cond_wrong = self.d.condition(batch.tokens[wrong], batch.mask[wrong], batch.pooled[wrong])
            loss_d = loss_d + self.options.mismatch_weight * F.relu(1 + self.d(real, cond_wrong)).mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        # generator: fool D, and stay near the real image of the same caption: the closest of k
        # draws, so that a caption leaving attributes open is not pulled to their average
        fake = self.g(z, batch.tokens.repeat(k, 1, 1), batch.mask.repeat(k, 1), batch.pooled.repeat(k, 1))
        cond_d = self.d.condition(batch.tokens, batch.mask, batch.pooled)
        adv = -self.d(fake, cond_d.repeat(k)).mean()
        # Measured: with L1 the generator stayed at the background-only image for 1,275 steps.
        # A caption fixes its objects only up to jitter, and for a small jittered shape most of its
        # pixels are covered less than half the time, so their median is the background; the mean
        # (MSE) keeps a faint shape there for the adversarial term to sharpen.
        power = 2 if self.options.recon == "mse" else 1
        rec = closest_of(fake, real, power).mean() / real[0].numel()
        loss_g = adv + self.options.recon_weight * rec
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        torch.nn.utils.clip_grad_norm_(self.g.parameters(), 5.0)
        self.opt_g.step()

        # The average starts short and lengthens to ``ema`` (as in Karras et al.'s ramp): a fixed
        # 0.999 from step 0 keeps 37 % of the random initial weights after 1000 steps.
        self.ema_steps += 1
        decay = min(self.options.ema, (1 + self.ema_steps) / (10 + self.ema_steps))
        with torch.no_grad():
            for p_ema, p in zip(self.g_ema.parameters(), self.g.parameters()):
                p_ema.lerp_(p, 1 - decay)
            for b_ema, b_ in zip(self.g_ema.buffers(), self.g.buffers()):
                b_ema.copy_(b_)
        return {"recon": rec.item(), "g_adv": adv.item(), "d": loss_d.item()}

    def state(self) -> dict:
        return {
            "g": self.g.state_dict(),
            "d": self.d.state_dict(),
            "g_ema": self.g_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "ema_steps": self.ema_steps,
        }

    def load_state(self, state: dict) -> None:
        self.g.load_state_dict(state["g"])
        self.d.load_state_dict(state["d"])
        self.g_ema.load_state_dict(state["g_ema"])
        if "ema_steps" in state:
            self.ema_steps = state["ema_steps"]
        else:  # a checkpoint from before the ramp: restart the average from the current weights
            self.g_ema.load_state_dict(state["g"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])

    def load_generator(self, folder: Path) -> None:
        # A trained folder holds only the averaged generator: both generators start from it and
        # the discriminator starts fresh.
        trained = GANGenerator.from_folder(folder).state_dict()
        for g in (self.g, self.g_ema):
            g.load_state_dict(trained)

    def export(self, folder: Path, training: dict) -> None:
        self.g_ema.save(folder, training)

    def sample(self, tokens, mask, pooled, generators):
        return self.g_ema.generate(tokens, mask, pooled, generators)


class GANSoundTrainer(GANTrainer):
    """The same GAN on Sounds: 1×64×96 log-mel spectrograms (64 mels × the 94 frames of a 1.5 s
    clip, padded), generated from a 4×6 seed; the config records the mel layout for generation."""

    family = "gan-sound"
    modality = "sounds"
    sample_shape = (1, 64, 96)

    def model_config(self, options: GANOptions) -> GANConfig:
        return GANConfig(**sound_config(self.family, self.shape()))
