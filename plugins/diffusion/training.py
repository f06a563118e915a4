"""Training the Shapes diffusion model: the ``diffusion`` family's part of Loom's training workflow.

A diffusers UNet2DConditionModel in a 16×16×48 folded-pixel space (see :mod:`.shapes` for why),
conditioned on the caption's token states (cross-attention, 384 wide from all-MiniLM-L6-v2) and
its pooled vector (added to the timestep embedding); diffusers' DDPMScheduler noise schedule;
v- or epsilon-prediction; an EMA of the weights is what gets exported and sampled.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch.nn import functional as F

from loom.core.training import Trainer, TrainerOptions, warmup_cosine

from .shapes import ShapesDiffusionConfig, ShapesDiffusionModel, noise_schedule, save


class DiffusionOptions(TrainerOptions):
    batch_size: int = Field(32, ge=1, description="images per step")
    lr: float = Field(3e-4, gt=0, description="peak learning rate")
    prediction_type: Literal["v_prediction", "epsilon"] = Field("v_prediction", description="what the UNet predicts")
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0, description="decay of the exported weight average")
    cond_dropout: float = Field(0.1, ge=0.0, le=1.0, description="share of captions replaced by the empty condition (for guidance)")
    channels: list[int] = Field(default_factory=lambda: [64, 96, 128], min_length=2, description="UNet widths, one per resolution")
    attention_head_dim: int = Field(32, ge=1, description="width of each attention head")
    sample_steps: int = Field(20, ge=1, description="denoising steps for the sample grid")


class DiffusionTrainer(Trainer):
    family = "diffusion"
    image_size = 64
    Options = DiffusionOptions

    def __init__(self, options: DiffusionOptions, generator: torch.Generator) -> None:
        super().__init__(options, generator)
        cfg = ShapesDiffusionConfig(
            image_size=self.image_size, block_out_channels=list(options.channels),
            attention_head_dim=options.attention_head_dim, prediction_type=options.prediction_type,
        )
        self.model = ShapesDiffusionModel(cfg).train()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.ema_steps = 0
        self.schedule = noise_schedule(cfg)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=options.lr, weight_decay=0.0)

    def step(self, batch, progress: float) -> dict[str, float]:
        o = self.options
        lr = warmup_cosine(o.lr, progress, floor=0.1)
        for group in self.opt.param_groups:
            group["lr"] = lr
        g = self.generator
        x0 = self.model.fold(batch.images)
        b = x0.shape[0]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, self.schedule.config.num_train_timesteps, (b,), generator=g)
        # the empty condition (zeros) stands in for some captions, so sampling can guide against it
        drop = (torch.rand(b, generator=g) < o.cond_dropout).float()
        keep = 1 - drop
        tokens = batch.tokens * keep[:, None, None]
        pooled = batch.pooled * keep[:, None]
        mask = torch.maximum(batch.mask.float(), drop[:, None])
        noisy = self.schedule.add_noise(x0, noise, t)
        target = noise if o.prediction_type == "epsilon" else self.schedule.get_velocity(x0, noise, t)
        loss = F.mse_loss(self.model(noisy, t, tokens, mask, pooled), target)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self._update_ema()
        return {"loss": loss.item(), "lr": lr}

    @torch.no_grad()
    def _update_ema(self) -> None:
        self.ema_steps += 1
        # warm-up: early averages follow the fast-moving weights closely
        decay = min(self.options.ema_decay, (1 + self.ema_steps) / (10 + self.ema_steps))
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.lerp_(p, 1 - decay)

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "ema_steps": self.ema_steps}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.ema_steps = int(state["ema_steps"])

    def export(self, folder: Path, training: dict) -> None:
        self.ema.cfg = replace(self.ema.cfg, training=training)
        save(self.ema, folder)

    def sample(self, tokens, mask, pooled, generators):
        return self.ema.generate(tokens, mask, pooled, generators, steps=self.options.sample_steps)
