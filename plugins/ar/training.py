"""Training the autoregressive family in two phases: first the VQ-VAE tokenizer, then the token
transformer on the frozen tokenizer's codes."""

from __future__ import annotations

import torch
from pydantic import Field
from torch.nn import functional as F

from loom.core.training import TrainerOptions
from loom.plugins.common.training import SavedModelTrainer, warmup_cosine

from .model import ARConfig, ARModel, empty_condition

#: the architecture options default to the model's own defaults, so the two cannot drift apart
_ARCH = ARConfig()


class AROptions(TrainerOptions):
    batch_size: int = Field(32, ge=1, description="images per step")
    lr: float = Field(6e-4, gt=0, description="peak learning rate of the transformer")
    tokenizer_lr: float = Field(1e-3, gt=0, description="peak learning rate of the VQ-VAE")
    tokenizer_fraction: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="share of the run spent on the tokenizer (0 to keep the tokenizer an --init brings)",
    )
    cond_dropout: float = Field(
        0.1, ge=0.0, le=1.0, description="share of captions replaced by the empty condition (for guidance)"
    )
    guidance_scale: float = Field(2.0, ge=1.0, description="classifier-free guidance of the sample grid")
    edge_weight: float = Field(
        20.0,
        ge=0.0,
        description="extra weight of the tokenizer's loss on pixels near an edge (plain MSE blurred shapes into blobs)",
    )
    vq_channels: list[int] = Field(
        default_factory=lambda: list(_ARCH.vq_channels),
        min_length=2,
        description="tokenizer widths at full resolution and after each halving: three give a 16×16 token grid, four 8×8",
    )
    codebook: int = Field(_ARCH.codebook, ge=2, description="tokenizer codebook entries")
    d_model: int = Field(
        _ARCH.d_model, ge=8, multiple_of=4, description="transformer width (a multiple of its 4 heads)"
    )
    layers: int = Field(_ARCH.layers, ge=1, description="transformer layers")


class ARTrainer(SavedModelTrainer):
    family = "ar"
    Options = AROptions
    optimisers = ("opt_vq", "opt_prior")

    def __init__(self, options: AROptions, generator: torch.Generator) -> None:
        super().__init__(options, generator)
        cfg = ARConfig(
            image_size=self.image_size,
            vq_channels=list(options.vq_channels),
            codebook=options.codebook,
            d_model=options.d_model,
            layers=options.layers,
        )
        self.model = ARModel(cfg).train()
        self.opt_vq = torch.optim.Adam(self.model.tokenizer.parameters(), lr=options.tokenizer_lr)
        self.opt_prior = torch.optim.AdamW(self.model.prior.parameters(), lr=options.lr, weight_decay=0.01)

    def step(self, batch, progress: float) -> dict[str, float]:
        f = self.options.tokenizer_fraction
        if progress < f:
            for group in self.opt_vq.param_groups:
                group["lr"] = warmup_cosine(self.options.tokenizer_lr, progress / f)
            self.model.tokenizer.train()
            loss, parts = self.model.tokenizer.loss(batch.images, self.generator, self.options.edge_weight)
            self.opt_vq.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_vq.step()
            return parts
        for group in self.opt_prior.param_groups:
            group["lr"] = warmup_cosine(self.options.lr, (progress - f) / (1 - f))
        self.model.tokenizer.eval()
        codes = self.model.tokenizer.encode(batch.images)
        # the empty condition stands in for some captions, so sampling can guide against it
        drop = torch.rand(codes.shape[0], generator=self.generator) < self.options.cond_dropout
        tokens, mask, pooled = batch.tokens, batch.mask, batch.pooled
        if drop.any():
            empty = empty_condition(tokens, mask, pooled)
            tokens, mask, pooled = (
                torch.where(drop.view(-1, *[1] * (c.dim() - 1)), e, c) for c, e in zip((tokens, mask, pooled), empty)
            )
        logits = self.model.prior(codes, tokens, mask, pooled)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1))
        self.opt_prior.zero_grad(set_to_none=True)
        ce.backward()
        torch.nn.utils.clip_grad_norm_(self.model.prior.parameters(), 1.0)
        self.opt_prior.step()
        return {"ce": ce.item()}

    def sample(self, tokens, mask, pooled, generators):
        was = self.model.training
        self.model.eval()
        images = self.model.generate(tokens, mask, pooled, generators, guidance_scale=self.options.guidance_scale)
        self.model.train(was)
        return images
