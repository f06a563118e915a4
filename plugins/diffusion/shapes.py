"""Loom's Shapes diffusion model: a small diffusers UNet2DConditionModel conditioned on the
``text-encoder`` step's token embeddings (imports torch and diffusers; loaded only by the
``diffusion`` component's setup and by its trainer).

Where it diffuses, two ways (``autoencoder`` in the config):

- In the latent space of a small diffusers ``AutoencoderKL`` trained on Shapes by the same run
  (the Stable Diffusion recipe): 64×64 RGB → 16×16×8 latents. The UNet's first level is 8 times
  wider than its input, and the decoder turns a slightly-off latent into a clean image with
  sharp edges. This is what ``loom train diffusion`` builds by default.
- Without an autoencoder: the image folded 4×4 into 16×16×48 (pixel unshuffle; exact, no
  weights). Measured on Shapes (``bench/diffusion_denoise.py``), a UNet whose first level is
  barely wider than those 48 channels could not learn to remove fine noise on 2 CPU cores:
  samples kept their speckle, ShapesEval 0.000 after 4,500 steps.
"""

from __future__ import annotations

import inspect
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from loom.plugins.common import WEIGHTS_NAME
from loom.plugins.common.saved import SavedModel, TextConditionedConfig

from . import ddim
from .ddim import item_noise
from .plain import norm_groups
from .sampling import SCHEDULERS, SHAPES_GUIDANCE, make_scheduler

#: The autoencoder's weights, beside the UNet's in ``model.safetensors``.
AUTOENCODER_NAME = "autoencoder.safetensors"
#: DiffEdit's threshold: a latent belongs to the changed region where the caption moves the noise
#: prediction by more than this share of the most it moves any latent of the image. 0.2 and 0.3
#: scored alike on 40 recolour tasks (0.850); 0.5 left parts of objects out (0.750)
#: (``bench/shapes_edit_explore.py region``).
CHANGED_SHARE = 0.3


class ShapesDiffusionConfig(TextConditionedConfig):
    """Architecture and noise schedule; saved as config.json beside the weights."""

    family: str = "diffusion"
    #: side of the square patch folded into channels (pixel unshuffle)
    patch: int = 4
    block_out_channels: list[int] = [64, 128]
    layers_per_block: int = 1
    attention_head_dim: int = 32
    prediction_type: str = "v_prediction"
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    #: the AutoencoderKL's ``block_out_channels``, ``latent_channels`` and ``layers_per_block``,
    #: and the ``shift``/``scale`` that bring its latents to zero mean and unit variance
    #: (measured when the UNet starts training); None: diffuse the folded pixels
    autoencoder: dict | None = None
    #: the UNet's GroupNorm groups; None: diffusers' 32 (or the narrowest width, if less)
    norm_num_groups: int | None = None
    training: dict = {}

    @property
    def channels(self) -> int:
        if self.autoencoder:
            return int(self.autoencoder["latent_channels"])
        return 3 * self.patch**2

    @property
    def latent_size(self) -> int:
        if self.autoencoder:
            return self.image_size // 2 ** (len(self.autoencoder["block_out_channels"]) - 1)
        return self.image_size // self.patch


def build_autoencoder(spec: dict):
    """The diffusers AutoencoderKL a config's ``autoencoder`` entry describes."""
    from diffusers import AutoencoderKL

    widths = tuple(spec["block_out_channels"])
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=widths,
        latent_channels=int(spec["latent_channels"]),
        down_block_types=("DownEncoderBlock2D",) * len(widths),
        up_block_types=("UpDecoderBlock2D",) * len(widths),
        layers_per_block=int(spec.get("layers_per_block", 1)),
        norm_num_groups=int(spec.get("norm_num_groups") or norm_groups(list(widths))),
    )


def noise_schedule(cfg: ShapesDiffusionConfig):
    """diffusers' DDPMScheduler with the model's training schedule."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        clip_sample=False,
    )


class ShapesDiffusionModel(SavedModel):
    """The UNet, the fold between images and latents, and sampling."""

    config_class = ShapesDiffusionConfig
    #: build the networks in plain torch (:mod:`.plain`: the same weights and outputs, bit for bit) instead of
    #: diffusers, whose import takes seconds (it imports transformers, scipy and sympy); see
    #: :class:`PlainShapesDiffusionModel`
    plain: ClassVar[bool] = False

    def __init__(self, cfg: ShapesDiffusionConfig):
        super().__init__(cfg)
        from . import plain

        n = len(cfg.block_out_channels)
        self.vae = None
        if cfg.autoencoder:
            self.vae = plain.plain_autoencoder(cfg.autoencoder) if self.plain else build_autoencoder(cfg.autoencoder)
        # cross-attention to the caption at every resolution but the first (16×16: attention there
        # doubled the time of a training step)
        down = ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * (n - 1)
        up = ["CrossAttnUpBlock2D"] * (n - 1) + ["UpBlock2D"]
        if self.plain:
            build = plain.plain_unet
        else:
            from diffusers import UNet2DConditionModel as build
        self.unet = build(
            sample_size=cfg.latent_size,
            in_channels=cfg.channels,
            out_channels=cfg.channels,
            block_out_channels=tuple(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block,
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            mid_block_type="UNetMidBlock2DCrossAttn",
            cross_attention_dim=cfg.text_dim,
            attention_head_dim=cfg.attention_head_dim,
            norm_num_groups=cfg.norm_num_groups or min(32, *cfg.block_out_channels),
            # the pooled sentence vector joins the timestep embedding
            class_embed_type="projection",
            projection_class_embeddings_input_dim=cfg.text_dim,
        )

    def weight_files(self) -> dict[str, nn.Module]:
        """The UNet in ``model.safetensors``, the autoencoder (if any) in ``autoencoder.safetensors``."""
        files = {WEIGHTS_NAME: self.unet}
        if self.vae is not None:
            files[AUTOENCODER_NAME] = self.vae
        return files

    def fold(self, images):
        """B×3×H×W in [0, 1] → the latents the UNet diffuses: the autoencoder's posterior means,
        shifted and scaled to unit variance, or the folded pixels (B×48×H/4×W/4 in [-1, 1])."""
        if self.vae is None:
            return F.pixel_unshuffle(images * 2 - 1, self.cfg.patch)
        shift, scale = self._standardise()
        return (self.vae.encode(images * 2 - 1).latent_dist.mean - shift) * scale

    def unfold(self, latents):
        if self.vae is None:
            return (F.pixel_shuffle(latents, self.cfg.patch) + 1) / 2
        shift, scale = self._standardise()
        return (self.vae.decode(latents / scale + shift).sample + 1) / 2

    def _standardise(self) -> tuple[float, float]:
        """The latents' shift and scale; the identity until training's first phase measures them."""
        ae = self.cfg.autoencoder
        return ae.get("shift", 0.0), ae.get("scale", 1.0)

    def forward(self, latents, t, tokens, mask, pooled):
        return self.unet(
            latents, t, encoder_hidden_states=tokens, encoder_attention_mask=mask, class_labels=pooled
        ).sample

    @torch.no_grad()
    def generate(
        self,
        tokens,
        mask,
        pooled,
        generators,
        steps: int = 20,
        scheduler: str = "dpm++2m",
        guidance_scale: float | None = None,
        progress=None,
        image=None,
        repaint=None,
        strength: float = 1.0,
        method: str = "diffedit",
    ):
        """Images (B×3×64×64 in [0, 1]) for the caption embeddings; item i's noise comes from
        ``generators[i]`` alone. With ``guidance_scale`` > 1, classifier-free guidance against
        the empty condition the model was trained with (zero tokens and pooled vector); None
        uses ``SHAPES_GUIDANCE``.

        Edits (``image``: B×3×64×64 in [0, 1]): SDEdit, the image's latents noised to
        ``strength`` × the schedule with the item's own noise, then the remaining steps
        (strength 1: from pure noise; a strength that leaves no step: the image's round trip).
        With ``method`` "diffedit" and strictly between those, the region the prompt changes
        (:meth:`changed_region`) is repainted from noise instead. With ``repaint`` too (B×1×64×64, white = repaint): after every step the latents outside
        the mask (max-pooled to latent size, so a latent touching it is free) are replaced by the
        image's latents noised to that step's level (the same noise), and the decoded result is
        composited with ``image`` in pixel space, so unmasked pixels stay exactly."""
        if guidance_scale is None:
            guidance_scale = SHAPES_GUIDANCE
        sched = self._scheduler(scheduler, steps, tokens.device)
        b, size = tokens.shape[0], self.cfg.latent_size
        noise = item_noise((b, self.cfg.channels, size, size), list(generators), tokens.device)
        known = None if image is None else self.fold(image)
        strength = 1.0 if known is None else strength
        if method == "diffedit" and repaint is None and 0 < int(steps * strength) < steps:
            repaint = self.changed_region(known, tokens, mask, pooled, strength, generators)
            strength = 1.0
        timesteps = self._timesteps(sched, steps, strength)
        if strength >= 1 or not len(timesteps):
            x = noise * sched.init_noise_sigma if strength >= 1 else known
        else:
            x = sched.add_noise(known, noise, timesteps[:1].repeat(b))
        keep = None if repaint is None else 1 - F.adaptive_max_pool2d(repaint, size)
        condition = _guided(tokens, mask, pooled) if guidance_scale > 1 else (tokens, mask, pooled)
        accepts_generator = "generator" in inspect.signature(sched.step).parameters
        for i, t in enumerate(timesteps):
            x, guess = self._step(sched, x, t, condition, guidance_scale, generators if accepts_generator else None)
            if keep is not None:
                later = timesteps[i + 1 : i + 2]
                level = sched.add_noise(known, noise, later) if len(later) else known
                x = keep * level + (1 - keep) * x
            if progress is not None:  # a preview, if asked for, decodes the step's guess of the final latents
                progress(i + 1, len(timesteps), "denoising step", lambda z=guess: self.unfold(z).clamp(0, 1))
        pixels = self.unfold(x).clamp(0, 1)
        return pixels if repaint is None else repaint * pixels + (1 - repaint) * image

    def changed_region(self, known, tokens, mask, pooled, level: float, generators, samples: int = 4):
        """Where the caption asks the image (latents ``known``) to change, B×1×64×64 (1 = change):
        DiffEdit (Couairon et al., 2023) against the empty condition. The latents are noised to
        ``level`` of the schedule ``samples`` times with each item's own noise; where the noise
        predictions with and without the caption differ most (over :data:`CHANGED_SHARE` of the
        item's largest difference), grown by one latent, is the region.

        Measured on 40 recolour tasks (docs/diffusion.md, "Editing with the Shapes model"): SDEdit
        kept the old colour at the strengths an edit runs at; a found region repainted from noise
        recoloured the object and kept the rest."""
        b, c, size, _ = known.shape
        noise = item_noise((b, samples * c, size, size), list(generators), known.device)
        t = torch.full((b,), max(0, round(level * self.cfg.num_train_timesteps) - 1), device=known.device)
        schedule, condition = noise_schedule(self.cfg), _guided(tokens, mask, pooled)
        differ = 0
        for eps in noise.chunk(samples, dim=1):
            x = schedule.add_noise(known, eps, t)
            uncond, cond = self(torch.cat([x, x]), torch.cat([t, t]), *condition).chunk(2)
            differ = differ + (cond - uncond).abs().mean(1, keepdim=True)
        region = (differ > CHANGED_SHARE * differ.amax((-2, -1), keepdim=True)).float()
        region = F.max_pool2d(region, 3, stride=1, padding=1)
        return F.interpolate(region, size=self.cfg.image_size, mode="nearest")

    def _scheduler(self, name: str, steps: int, device):
        if name == "ddim-trailing" and self.cfg.beta_schedule == ddim.SCHEDULE:  # no diffusers import
            sched = ddim.TrailingDDIM(self.cfg.num_train_timesteps, self.cfg.prediction_type)
            sched.set_timesteps(steps, device=device)
            return sched
        base = noise_schedule(self.cfg)
        sched = make_scheduler(base, name) if SCHEDULERS[name][0] else base
        sched.set_timesteps(steps, device=device)
        return sched

    @staticmethod
    def _timesteps(sched, steps: int, strength: float):
        """The last ``int(steps × strength)`` steps of the schedule (diffusers' img2img rule)."""
        start = steps - min(int(steps * strength), steps)
        if start and hasattr(sched, "set_begin_index"):  # from the start, schedulers find their own index
            sched.set_begin_index(start * sched.order)
        return sched.timesteps[start * sched.order :]

    def _step(self, sched, x, t, condition, guidance_scale: float, generators):
        """One denoising step of the latents ``x`` at timestep ``t``: the next latents, and the scheduler's guess of
        the final ones (the next latents for a scheduler that gives none)."""
        guided = guidance_scale > 1
        out = self(sched.scale_model_input(torch.cat([x, x]) if guided else x, t), t, *condition)
        if guided:
            uncond, cond = out.chunk(2)
            out = uncond + guidance_scale * (cond - uncond)
        extra = {} if generators is None else {"generator": list(generators)}
        step = sched.step(out, t, x, **extra)
        guess = getattr(step, "pred_original_sample", None)
        return step.prev_sample, step.prev_sample if guess is None else guess


class PlainShapesDiffusionModel(ShapesDiffusionModel):
    """The same model with its networks in plain torch: what the generators sample with when no
    adapter is asked for (peft's adapters load into diffusers' modules), so that sampling imports no
    diffusers (with the ``ddim-trailing`` sampler; other samplers are diffusers' schedulers)."""

    plain = True


def _guided(tokens, mask, pooled):
    """The conditions with the empty one (zero tokens and pooled vector) stacked before them."""
    return (
        torch.cat([torch.zeros_like(tokens), tokens]),
        torch.cat([torch.ones_like(mask), mask]),
        torch.cat([torch.zeros_like(pooled), pooled]),
    )
