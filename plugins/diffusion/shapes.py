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

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from loom.core.training import write_json_atomic


@dataclass
class ShapesDiffusionConfig:
    """Architecture and noise schedule; saved as config.json beside the weights."""

    family: str = "diffusion"
    image_size: int = 64
    #: side of the square patch folded into channels (pixel unshuffle)
    patch: int = 4
    text_dim: int = 384
    encoder: str = "all-MiniLM-L6-v2"
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128])
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
    training: dict = field(default_factory=dict)

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


def norm_groups(widths: list[int]) -> int:
    """GroupNorm groups for a network of these widths: four channels per group at the narrowest
    level (at most 32 groups). One channel per group (diffusers' 32 groups on 16 or 32 channels)
    normalises away each channel's mean, so an autoencoder's last norm erases the flat colours
    Shapes is made of: measured, such an autoencoder's L1 stalled near 0.55 over 120 steps where
    one with four channels per group went on falling."""
    import math

    return max(1, min(32, math.gcd(*widths) // 4))


def build_autoencoder(spec: dict):
    """The diffusers AutoencoderKL a config's ``autoencoder`` entry describes."""
    from diffusers import AutoencoderKL

    widths = tuple(spec["block_out_channels"])
    return AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=widths, latent_channels=int(spec["latent_channels"]),
        down_block_types=("DownEncoderBlock2D",) * len(widths), up_block_types=("UpDecoderBlock2D",) * len(widths),
        layers_per_block=int(spec.get("layers_per_block", 1)),
        norm_num_groups=int(spec.get("norm_num_groups") or norm_groups(list(widths))),
    )


def noise_schedule(cfg: ShapesDiffusionConfig):
    """diffusers' DDPMScheduler with the model's training schedule."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule, prediction_type=cfg.prediction_type,
        clip_sample=False,
    )


class ShapesDiffusionModel(nn.Module):
    """The UNet, the fold between images and latents, and sampling."""

    def __init__(self, cfg: ShapesDiffusionConfig):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.cfg = cfg
        n = len(cfg.block_out_channels)
        self.vae = build_autoencoder(cfg.autoencoder) if cfg.autoencoder else None
        # cross-attention to the caption at every resolution but the first (16×16: attention there
        # doubled the time of a training step)
        down = ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * (n - 1)
        up = ["CrossAttnUpBlock2D"] * (n - 1) + ["UpBlock2D"]
        self.unet = UNet2DConditionModel(
            sample_size=cfg.latent_size, in_channels=cfg.channels, out_channels=cfg.channels,
            block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
            down_block_types=tuple(down), up_block_types=tuple(up), mid_block_type="UNetMidBlock2DCrossAttn",
            cross_attention_dim=cfg.text_dim, attention_head_dim=cfg.attention_head_dim,
            norm_num_groups=cfg.norm_num_groups or min(32, *cfg.block_out_channels),
            # the pooled sentence vector joins the timestep embedding
            class_embed_type="projection", projection_class_embeddings_input_dim=cfg.text_dim,
        )

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
        return self.unet(latents, t, encoder_hidden_states=tokens, encoder_attention_mask=mask, class_labels=pooled).sample

    @torch.no_grad()
    def generate(self, tokens, mask, pooled, generators, steps: int = 20, scheduler: str = "dpm++2m",
                 guidance_scale: float | None = None, progress=None):
        """Images (B×3×64×64 in [0, 1]) for the caption embeddings; item i's noise comes from
        ``generators[i]`` alone. With ``guidance_scale`` > 1, classifier-free guidance against
        the empty condition the model was trained with (zero tokens and pooled vector); None
        uses ``SHAPES_GUIDANCE``."""
        from diffusers.utils.torch_utils import randn_tensor

        from loom.plugins.diffusion import SCHEDULERS, SHAPES_GUIDANCE

        from .runtime import make_scheduler

        if guidance_scale is None:
            guidance_scale = SHAPES_GUIDANCE

        base = noise_schedule(self.cfg)
        sched = make_scheduler(base, scheduler) if SCHEDULERS[scheduler][0] else base
        sched.set_timesteps(steps, device=tokens.device)
        b, size = tokens.shape[0], self.cfg.latent_size
        x = randn_tensor((b, self.cfg.channels, size, size), generator=list(generators), device=tokens.device)
        x = x * sched.init_noise_sigma
        guided = guidance_scale > 1
        if guided:
            tokens = torch.cat([torch.zeros_like(tokens), tokens])
            mask = torch.cat([torch.ones_like(mask), mask])
            pooled = torch.cat([torch.zeros_like(pooled), pooled])
        accepts_generator = "generator" in __import__("inspect").signature(sched.step).parameters
        timesteps = sched.timesteps
        for i, t in enumerate(timesteps):
            inp = sched.scale_model_input(torch.cat([x, x]) if guided else x, t)
            out = self(inp, t, tokens, mask, pooled)
            if guided:
                uncond, cond = out.chunk(2)
                out = uncond + guidance_scale * (cond - uncond)
            extra = {"generator": list(generators)} if accepts_generator else {}
            x = sched.step(out, t, x, **extra).prev_sample
            if progress is not None:
                progress(i + 1, len(timesteps), "denoising step")
        return self.unfold(x).clamp(0, 1)


def save(model: ShapesDiffusionModel, folder: "str | Path", dtype=torch.float16) -> Path:
    """Write ``config.json``, ``model.safetensors`` (the UNet) and, with an autoencoder,
    ``autoencoder.safetensors`` into ``folder``: float16, each file atomically."""
    from safetensors.torch import save_file

    from loom.core.files import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parts = {"model.safetensors": model.unet}
    if model.vae is not None:
        parts["autoencoder.safetensors"] = model.vae
    for name, module in parts.items():
        state = {k: v.detach().to(dtype).contiguous().cpu() for k, v in module.state_dict().items()}
        # atomic_path also gives the file the usual mode (safetensors writes it private)
        with atomic_path(folder / name) as tmp:
            save_file(state, str(tmp))
    write_json_atomic(folder / "config.json", asdict(model.cfg))
    return folder


def load(folder: "str | Path", device: str = "cpu") -> ShapesDiffusionModel:
    """A model from a folder written by :func:`save` (weights through safetensors only)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    raw = json.loads((folder / "config.json").read_text())
    known = {f.name for f in fields(ShapesDiffusionConfig)}
    cfg = ShapesDiffusionConfig(**{k: v for k, v in raw.items() if k in known})
    model = ShapesDiffusionModel(cfg)
    model.unet.load_state_dict({k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()})
    if model.vae is not None:
        path = folder / "autoencoder.safetensors"
        if not path.is_file():
            from loom.core import WeightsError

            raise WeightsError(f"{str(folder)!r} has no autoencoder.safetensors, which its config.json names; copy the whole trained folder")
        model.vae.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.to(device).eval()
