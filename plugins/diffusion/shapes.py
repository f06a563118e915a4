"""Loom's Shapes diffusion model: a small diffusers UNet2DConditionModel conditioned on the
``text-encoder`` step's token embeddings (imports torch and diffusers; loaded only by the
``diffusion`` component's setup and by its trainer).

Where it diffuses: images are 64×64 RGB, folded 4×4 into a 16×16×48 "latent" (pixel unshuffle).
The fold is exact and has no weights, so there is no autoencoder to train or to lose detail, and
the UNet works on 16× fewer positions than in pixel space: a training step at batch 32 stays
under a second on a 2-core CPU. Shapes images are flat colours with sharp edges, which the 48
channels of each 4×4 patch carry exactly.
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
    block_out_channels: list[int] = field(default_factory=lambda: [64, 96, 128])
    layers_per_block: int = 1
    attention_head_dim: int = 32
    prediction_type: str = "v_prediction"
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    training: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return 3 * self.patch**2

    @property
    def latent_size(self) -> int:
        return self.image_size // self.patch


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
        # cross-attention to the caption at every resolution but the first (16×16: the costliest)
        down = ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * (n - 1)
        up = ["CrossAttnUpBlock2D"] * (n - 1) + ["UpBlock2D"]
        self.unet = UNet2DConditionModel(
            sample_size=cfg.latent_size, in_channels=cfg.channels, out_channels=cfg.channels,
            block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
            down_block_types=tuple(down), up_block_types=tuple(up), mid_block_type="UNetMidBlock2DCrossAttn",
            cross_attention_dim=cfg.text_dim, attention_head_dim=cfg.attention_head_dim, norm_num_groups=min(32, *cfg.block_out_channels),
            # the pooled sentence vector joins the timestep embedding
            class_embed_type="projection", projection_class_embeddings_input_dim=cfg.text_dim,
        )

    def fold(self, images):
        """B×3×H×W in [0, 1] → B×48×H/4×W/4 in [-1, 1]."""
        return F.pixel_unshuffle(images * 2 - 1, self.cfg.patch)

    def unfold(self, latents):
        return (F.pixel_shuffle(latents, self.cfg.patch) + 1) / 2

    def forward(self, latents, t, tokens, mask, pooled):
        return self.unet(latents, t, encoder_hidden_states=tokens, encoder_attention_mask=mask, class_labels=pooled).sample

    @torch.no_grad()
    def generate(self, tokens, mask, pooled, generators, steps: int = 20, scheduler: str = "dpm++2m",
                 guidance_scale: float = 2.0, progress=None):
        """Images (B×3×64×64 in [0, 1]) for the caption embeddings; item i's noise comes from
        ``generators[i]`` alone. With ``guidance_scale`` > 1, classifier-free guidance against
        the empty condition the model was trained with (zero tokens and pooled vector)."""
        from diffusers.utils.torch_utils import randn_tensor

        from loom.plugins.diffusion import SCHEDULERS

        from .runtime import make_scheduler

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
    """Write ``config.json`` and ``model.safetensors`` (float16) into ``folder``, each atomically."""
    from safetensors.torch import save_file

    from loom.core.files import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype).contiguous().cpu() for k, v in model.unet.state_dict().items()}
    # atomic_path also gives the file the usual mode (safetensors writes it private)
    with atomic_path(folder / "model.safetensors") as tmp:
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
    state = load_file(str(folder / "model.safetensors"))
    model.unet.load_state_dict({k: v.float() for k, v in state.items()})
    return model.to(device).eval()
