"""Training the Shapes diffusion model: the ``diffusion`` family's part of Loom's training workflow.

Two phases in one run, as the autoregressive family does:

1. the first ``autoencoder_share`` of the run trains a diffusers AutoencoderKL on the images
   (L1 reconstruction plus a small KL term): 64×64 RGB ↔ 16×16×8 latents;
2. the rest trains a diffusers UNet2DConditionModel on those latents (the autoencoder frozen,
   latents shifted and scaled to unit variance as measured on the first batch of the phase),
   conditioned on the caption's token states (cross-attention, 384 wide from all-MiniLM-L6-v2)
   and its pooled vector (added to the timestep embedding); diffusers' DDPMScheduler noise
   schedule; v- or epsilon-prediction; an EMA of the UNet's weights is exported and sampled.

With ``autoencoder_channels`` empty there is no first phase: the UNet diffuses folded pixels
(see :mod:`.shapes` for why that is not the default).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch.nn import functional as F

from loom.core.training import Trainer, TrainerOptions
from loom.plugins.common.nn import edge_weights
from loom.plugins.common.training import warmup_cosine

from .shapes import ShapesDiffusionConfig, ShapesDiffusionModel, noise_schedule, norm_groups

#: the UNet options default to the model's own defaults, so the two cannot drift apart
_MODEL = ShapesDiffusionConfig()


class DiffusionOptions(TrainerOptions):
    batch_size: int = Field(32, ge=1, description="images per step")
    lr: float = Field(3e-4, gt=0, description="peak learning rate")
    prediction_type: Literal["v_prediction", "epsilon"] = Field(
        _MODEL.prediction_type, description="what the UNet predicts"
    )
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0, description="decay of the exported weight average")
    cond_dropout: float = Field(
        0.1, ge=0.0, le=1.0, description="share of captions replaced by the empty condition (for guidance)"
    )
    channels: list[int] = Field(
        default_factory=lambda: list(_MODEL.block_out_channels),
        min_length=2,
        description="UNet widths, one per resolution",
    )
    attention_head_dim: int = Field(_MODEL.attention_head_dim, ge=1, description="width of each attention head")
    sample_steps: int = Field(20, ge=1, description="denoising steps for the sample grid")
    autoencoder_channels: list[int] = Field(
        default_factory=lambda: [16, 32, 64],
        description="AutoencoderKL widths, one per resolution (n widths: latents 2^(n-1) times smaller); [] diffuses folded pixels",
    )
    latent_channels: int = Field(8, ge=1, description="channels of the autoencoder's latents")
    autoencoder_share: float = Field(0.35, ge=0.0, lt=1.0, description="share of the run that trains the autoencoder")
    autoencoder_lr: float = Field(3e-4, gt=0, description="peak learning rate of the autoencoder")
    kl_weight: float = Field(1e-6, ge=0.0, description="weight of the autoencoder's KL term")
    edge_weight: float = Field(20.0, ge=0.0, description="extra L1 weight of the autoencoder on pixels near an edge")
    unet_init: str | None = Field(
        None,
        description="a trained diffusion model folder whose UNet (same widths and latent channels) this run's UNet "
        "starts from, whatever autoencoder the run has: a new autoencoder need not mean a UNet from scratch",
    )

    @field_validator("autoencoder_channels")
    @classmethod
    def _two_widths_or_none(cls, widths: list[int]) -> list[int]:
        if len(widths) == 1:
            raise ValueError(
                "give at least two widths (the autoencoder halves once per extra width), or [] to diffuse folded pixels"
            )
        return widths


def denoising_loss(model: ShapesDiffusionModel, schedule, batch, generator: torch.Generator, cond_dropout: float):
    """The loss the model's UNet (and a LoRA of it) trains on: the batch's latents noised at random
    timesteps, the noise or velocity predicted (the model's ``prediction_type``), a share
    ``cond_dropout`` of the captions replaced by the empty condition; every draw from ``generator``."""
    with torch.no_grad():
        x0 = model.fold(batch.images)
    b = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.randint(0, schedule.config.num_train_timesteps, (b,), generator=generator)
    # the empty condition (zeros) stands in for some captions, so sampling can guide against it
    drop = (torch.rand(b, generator=generator) < cond_dropout).float()
    keep = 1 - drop
    tokens = batch.tokens * keep[:, None, None]
    pooled = batch.pooled * keep[:, None]
    mask = torch.maximum(batch.mask.float(), drop[:, None])
    noisy = schedule.add_noise(x0, noise, t)
    target = noise if model.cfg.prediction_type == "epsilon" else schedule.get_velocity(x0, noise, t)
    return F.mse_loss(model(noisy, t, tokens, mask, pooled), target)


def update(opt: torch.optim.Optimizer, params, loss, lr: float) -> None:
    """One step of ``opt`` at learning rate ``lr`` on ``loss``, the gradients of ``params`` clipped to norm 1."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, steps: int, decay: float) -> None:
    """Move ``ema``'s weights towards ``model``'s after its ``steps``-th step; in the first steps the
    average follows the fast-moving weights closely (the decay warms up to ``decay``)."""
    decay = min(decay, (1 + steps) / (10 + steps))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)


class DiffusionTrainer(Trainer):
    family = "diffusion"
    Options = DiffusionOptions

    def __init__(self, options: DiffusionOptions, generator: torch.Generator) -> None:
        super().__init__(options, generator)
        latent = bool(options.autoencoder_channels)
        autoencoder = (
            {
                "block_out_channels": list(options.autoencoder_channels),
                "latent_channels": options.latent_channels,
                "layers_per_block": 1,
                "norm_num_groups": norm_groups(list(options.autoencoder_channels)),
            }
            if latent
            else None
        )
        cfg = ShapesDiffusionConfig(
            image_size=self.image_size,
            block_out_channels=list(options.channels),
            attention_head_dim=options.attention_head_dim,
            prediction_type=options.prediction_type,
            autoencoder=autoencoder,
            norm_num_groups=norm_groups(list(options.channels)) if latent else None,
        )
        self.model = ShapesDiffusionModel(cfg).train()
        # the EMA follows the UNet; its autoencoder is copied in when the first phase ends
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.ema_steps = 0
        self.schedule = noise_schedule(cfg)
        self.opt = torch.optim.AdamW(self.model.unet.parameters(), lr=options.lr, weight_decay=0.0)
        self.opt_ae = torch.optim.Adam(self.model.vae.parameters(), lr=options.autoencoder_lr) if latent else None
        #: the share of the run the autoencoder trains: none without one
        self.share = options.autoencoder_share if latent else 0.0
        #: where the UNet's starting weights came from (``unet_init``), for the training record
        self.unet_from: dict | None = None
        self._load_unet_init()

    def _load_unet_init(self) -> None:
        if self.options.unet_init is None:
            return
        from loom.core import InputError

        folder = Path(self.options.unet_init)
        if not (folder / "config.json").is_file():
            raise InputError(
                f"unet_init {str(folder)!r} is not a trained diffusion model folder (no config.json there); "
                "name a folder that `loom train diffusion` wrote or the shipped plugins/diffusion/weights"
            )
        trained = ShapesDiffusionModel.from_folder(folder)
        unet = trained.unet.state_dict()
        # the folder (the shipped default, say) may be overwritten later: keep how its UNet was made
        record = trained.cfg.training or {}
        self.unet_from = {
            "folder": str(folder),
            **{k: record.get(k) for k in ("command", "resumed", "init_from", "seed", "steps", "minutes")},
        }
        for model in (self.model, self.ema):
            try:
                model.unet.load_state_dict(unet)
            except RuntimeError as err:
                first = str(err).strip().splitlines()[0]
                raise InputError(
                    f"unet_init {str(folder)!r}: its UNet does not fit this run's ({first}); give the same "
                    "channels, attention_head_dim and latent_channels as that model"
                ) from None

    def step(self, batch, progress: float) -> dict[str, float]:
        if progress < self.share:
            return self._autoencoder_step(batch, progress / self.share)
        if self.model.vae is not None and not self._autoencoder_frozen:
            self._freeze_autoencoder(batch.images)
        return self._unet_step(batch, (progress - self.share) / (1 - self.share))

    def _autoencoder_step(self, batch, progress: float) -> dict[str, float]:
        lr = warmup_cosine(self.options.autoencoder_lr, progress, floor=0.1)
        for group in self.opt_ae.param_groups:
            group["lr"] = lr
        x = batch.images * 2 - 1
        posterior = self.model.vae.encode(x).latent_dist
        # the posterior mean, as the UNet will see it; at initialisation a sample's unit
        # variance would drown the means
        recon = self.model.vae.decode(posterior.mode()).sample
        error = (recon - x).abs()
        # objects are a few percent of the pixels: on plain L1 the autoencoder learnt the
        # backgrounds and lost the objects (bench/diffusion_autoencoder.py); pixels near an edge
        # weigh 1 + edge_weight
        weight = edge_weights(x, self.options.edge_weight)
        loss = (error * weight).mean() + self.options.kl_weight * posterior.kl().mean()
        l1 = error.mean()
        self.opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_ae.step()
        return {"ae_l1": l1.item(), "lr": lr}

    @torch.no_grad()
    def _freeze_autoencoder(self, images) -> None:
        """End of the first phase: freeze the autoencoder and measure the shift and scale that
        bring its latents (of this batch) to zero mean and unit variance."""
        vae = self.model.vae.eval().requires_grad_(False)
        z = vae.encode(images * 2 - 1).latent_dist.mean
        self._set_autoencoder({"shift": round(float(z.mean()), 6), "scale": round(float(1 / z.std()), 6)})
        self.ema.vae.load_state_dict(vae.state_dict())

    def _unet_step(self, batch, progress: float) -> dict[str, float]:
        o = self.options
        lr = warmup_cosine(o.lr, progress, floor=0.1)
        loss = denoising_loss(self.model, self.schedule, batch, self.generator, o.cond_dropout)
        update(self.opt, self.model.unet.parameters(), loss, lr)
        self._update_ema()
        return {"loss": loss.item(), "lr": lr}

    def _update_ema(self) -> None:
        self.ema_steps += 1
        update_ema(self.ema.unet, self.model.unet, self.ema_steps, self.options.ema_decay)

    def state(self) -> dict:
        state = {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(),
            "ema_steps": self.ema_steps,
        }
        if self.opt_ae is not None:
            state["opt_ae"] = self.opt_ae.state_dict()
            state["autoencoder"] = dict(self.model.cfg.autoencoder)
        if self.unet_from is not None:
            state["unet_from"] = self.unet_from
        return state

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.ema_steps = int(state["ema_steps"])
        # a resumed run keeps the record taken when it started, not the folder as it is now
        self.unet_from = state.get("unet_from", self.unet_from)
        if self.opt_ae is not None:
            self.opt_ae.load_state_dict(state["opt_ae"])
            self._set_autoencoder(state["autoencoder"])

    def origins(self) -> dict[str, dict]:
        return {"unet_from": self.unet_from} if self.unet_from is not None else {}

    def load_generator(self, folder: Path) -> None:
        trained = ShapesDiffusionModel.from_folder(folder)
        for model in (self.model, self.ema):
            model.load_state_dict(trained.state_dict())
        if trained.cfg.autoencoder is not None and self.model.vae is not None:
            self._set_autoencoder(trained.cfg.autoencoder)

    def _set_autoencoder(self, record: dict) -> None:
        """Give both models the autoencoder record (its latents' shift and scale once measured);
        with those, the autoencoder is frozen."""
        for model in (self.model, self.ema):
            model.cfg.autoencoder.update(record)
        if self._autoencoder_frozen:
            self.model.vae.eval().requires_grad_(False)

    @property
    def _autoencoder_frozen(self) -> bool:
        """Whether the first phase is over: the latents' shift and scale are measured and the
        autoencoder no longer trains (false without an autoencoder)."""
        return "scale" in (self.model.cfg.autoencoder or {})

    def check_init(self) -> None:
        # the start's own unet_from (restored with its state) is its origin, recorded in init_from;
        # this run's is only its own unet_init
        self.unet_from = None
        # unet_init is asked for by name, so it wins over the --init model's UNet (loaded since __init__)
        self._load_unet_init()
        # a first phase would train an autoencoder that the loaded model has already frozen
        if self.share and self._autoencoder_frozen:
            from loom.core import InputError

            raise InputError(
                "this run starts from a model whose autoencoder is already trained and frozen; "
                "train only its UNet with -O autoencoder_share=0"
            )

    def _sync_autoencoder(self) -> None:
        # before the first phase ends, what is exported or sampled carries the autoencoder so far
        if self.model.vae is not None and not self._autoencoder_frozen:
            self.ema.vae.load_state_dict(self.model.vae.state_dict())

    def export(self, folder: Path, training: dict) -> None:
        self._sync_autoencoder()
        self.ema.save(folder, training)

    def sample(self, tokens, mask, pooled, generators):
        self._sync_autoencoder()
        return self.ema.generate(tokens, mask, pooled, generators, steps=self.options.sample_steps)
