"""Network blocks shared by the first-party families: text conditioning, spatial cross-attention,
FiLM upsampling, edge-weighted losses (imports torch; loaded only when a model loads or trains)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .saved import TextConditionedConfig


@dataclass
class Condition:
    vector: torch.Tensor
    tokens: torch.Tensor
    pad: torch.Tensor

    def repeat(self, k: int) -> "Condition":
        """The batch k times over (item i of copy j at j·B + i)."""
        return Condition(self.vector.repeat(k, 1), self.tokens.repeat(k, 1, 1), self.pad.repeat(k, 1))


def closest_of(samples: torch.Tensor, target: torch.Tensor, power: int = 2) -> torch.Tensor:
    """Per-item error (summed ``|d|**power``) of the closest of k samples (k·B×… against B×…)
    to its target.

    A caption that leaves attributes open fits many images; pulling every sample towards the one
    training image teaches the average of them all (a blur, or no object). Pulling only the
    closest of k, as implicit maximum likelihood estimation does (Li & Malik, 2018), lets each
    noise draw settle on one sharp answer, so the draws spread over what the caption allows.
    """
    err = (samples.view(-1, *target.shape) - target.unsqueeze(0)).abs().pow(power).flatten(2).sum(2)
    return err.min(0).values


def small_normal(*shape: int) -> nn.Parameter:
    """A parameter of ``torch.randn(*shape) * 0.02``. Inside ``with torch.device("meta")`` (the skeleton
    :meth:`SavedModel.from_folder` checks a weights file against) it holds no values: drawing them there imports
    torch's symbolic-shape machinery, seconds of a cold start."""
    if torch.empty(0).is_meta:
        return nn.Parameter(torch.empty(*shape))
    return nn.Parameter(torch.randn(*shape) * 0.02)


class TextCondition(nn.Module):
    """Token embeddings → one conditioning vector: a transformer layer over the projected tokens
    lets attributes bind to their objects; learned queries then pool what the decoder needs."""

    def __init__(self, text_dim: int, width: int, queries: int, cond_dim: int):
        super().__init__()
        self.proj = nn.Linear(text_dim, width)
        self.layer = nn.TransformerEncoderLayer(
            width, nhead=4, dim_feedforward=width * 2, dropout=0.0, batch_first=True
        )
        self.queries = small_normal(queries, width)
        self.pool = nn.MultiheadAttention(width, num_heads=4, batch_first=True)
        self.out = nn.Sequential(
            nn.Linear(queries * width + text_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim)
        )

    def forward(self, tokens, mask, pooled) -> Condition:
        """(condition vector B×cond_dim, token states B×L×width, padding mask B×L)."""
        pad = mask < 0.5
        h = self.layer(self.proj(tokens), src_key_padding_mask=pad)
        q = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        p, _ = self.pool(q, h, h, attn_mask=padding_mask(pad, q.shape[1], self.pool.num_heads), need_weights=False)
        return Condition(self.out(torch.cat([p.flatten(1), pooled], dim=1)), h, pad)


def padding_mask(pad, queries: int, heads: int):
    """``nn.MultiheadAttention``'s ``attn_mask`` (B·heads × queries × L, True = not attended) for the
    padding ``pad`` (B×L): what it makes of the same ``key_padding_mask``, with the same outputs. A
    ``key_padding_mask`` goes through ``torch._check_with``, whose first call imports torch's
    symbolic-shape machinery and sympy: 0.6 s of a cold ``loom generate``."""
    return pad[:, None, :].expand(-1, queries, -1).repeat_interleave(heads, dim=0)


class SpatialCrossAttention(nn.Module):
    """Each feature-map cell, tagged with a learned position embedding, attends over the token
    states. Measured on the VAE: without it the decoder must route "top left" through one global
    vector and plateaus at the background-only solution; with it each cell asks what is at its place."""

    def __init__(self, channels: int, cells: int, width: int):
        super().__init__()
        self.pos = small_normal(cells, channels)
        self.kv = nn.Linear(width, channels)
        self.attn = nn.MultiheadAttention(channels, num_heads=4, batch_first=True)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x, cond: Condition):
        b, c, hgt, wid = x.shape
        q = self.norm(x.flatten(2).transpose(1, 2) + self.pos)
        kv = self.kv(cond.tokens)
        out, _ = self.attn(
            q, kv, kv, attn_mask=padding_mask(cond.pad, q.shape[1], self.attn.num_heads), need_weights=False
        )
        return x + out.transpose(1, 2).reshape(b, c, hgt, wid)


class FiLMBlock(nn.Module):
    """Upsample ×2, two convolutions, the condition scaling and shifting the features."""

    def __init__(self, cin: int, cout: int, cond_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm1 = nn.GroupNorm(min(8, cout), cout)
        self.norm2 = nn.GroupNorm(min(8, cout), cout)
        self.film = nn.Linear(cond_dim, 2 * cout)

    def forward(self, x, cond: Condition):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = F.silu(self.norm1(self.conv1(x)))
        scale, shift = self.film(cond.vector)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(self.conv2(h)) * (1 + scale) + shift
        return F.silu(h)


class ConditionalDecoder(nn.Module):
    """(noise, condition) → image: a 4×4 seed, cross-attention at 4×4 and 8×8, FiLM upsampling,
    and a final pixel shuffle (a convolution stack at full resolution costs most on a CPU).

    ``seed_shape`` (height, width) and ``out_channels`` default to the image families' 4×4 seed
    and RGB; a sound family decodes 1-channel log-mel spectrograms from a wider seed (4×6 → 64×96)."""

    def __init__(
        self,
        noise_dim: int,
        cond_dim: int,
        width: int,
        channels: list[int],
        seed_shape: tuple[int, int] = (4, 4),
        out_channels: int = 3,
    ):
        super().__init__()
        self.channels = channels
        self.seed_shape = (int(seed_shape[0]), int(seed_shape[1]))
        h, w = self.seed_shape
        self.seed = nn.Linear(noise_dim + cond_dim, channels[0] * h * w)
        self.blocks = nn.ModuleList(FiLMBlock(a, b, cond_dim) for a, b in zip(channels[:-1], channels[1:]))
        self.cross = nn.ModuleList(SpatialCrossAttention(c, h * w * 4**i, width) for i, c in enumerate(channels[:2]))
        self.to_rgb = nn.Sequential(nn.Conv2d(channels[-1], 4 * out_channels, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, z, cond: Condition):
        x = self.seed(torch.cat([z, cond.vector], dim=1)).view(z.shape[0], self.channels[0], *self.seed_shape)
        x = self.cross[0](x, cond)
        for i, block in enumerate(self.blocks):
            x = block(x, cond)
            if i + 1 < len(self.cross):
                x = self.cross[i + 1](x, cond)
        return torch.sigmoid(self.to_rgb(x))


class ConditionalDecoderConfig(TextConditionedConfig):
    """The fields of a model built from :class:`TextCondition` and :class:`ConditionalDecoder` (the
    GAN and the VAE), on square RGB images or, with ``sample_shape`` and ``mel``, on log-mel images."""

    cond_dim: int = 256
    width: int = 128
    queries: int = 4
    #: decoder channels from the 4×4 seed, one entry per doubling; a final pixel shuffle doubles
    #: once more to the full image (a convolution stack at full resolution costs most on a CPU)
    channels: list[int] = [128, 128, 64, 32]
    #: (channels, height, width) of a sample when it is not a square RGB image of ``image_size``
    #: (a sound model: [1, mels, frames]); None for images
    sample_shape: list[int] | None = None
    #: how a sound model's outputs become waveforms (MelSettings, frames, samples); None for images
    mel: dict | None = None


#: Decoder channels of the first-party sound models, from their 4×6 seed to 64×96 log-mel images
#: (one 1-channel spectrogram needs less width than RGB scenes: 1.4 s a training step at batch 64
#: on one CPU thread against 2.1 s with the image models' 128, 128, 64, 32).
SOUND_CHANNELS = (128, 96, 64, 32)


def sound_config(family: str, shape: tuple[int, int, int]) -> dict:
    """The config entries of a first-party sound model of ``family`` whose samples are ``shape``
    (1 × mels × frames log-mel images): its layout, its decoder channels and how its outputs become
    waveforms (``mel``, a :class:`.mel.MelImage`)."""
    from .mel import MelImage

    return {
        "family": family,
        "sample_shape": list(shape),
        "channels": list(SOUND_CHANNELS),
        "mel": MelImage(frames=shape[2]).model_dump(),
    }


def sample_shape(cfg) -> tuple[int, int, int]:
    """(channels, height, width) a model config describes: its ``sample_shape`` when set (sound
    models: 1 × mels × frames), else square RGB images of ``image_size``."""
    shape = getattr(cfg, "sample_shape", None)
    if shape:
        return int(shape[0]), int(shape[1]), int(shape[2])
    return 3, int(cfg.image_size), int(cfg.image_size)


def seed_shape(shape: tuple[int, int, int], doublings: int) -> tuple[int, int]:
    """The decoder's seed (height, width) that ``doublings`` ×2 upsamplings bring to ``shape``, or a
    ValueError when the sample's sides are not positive multiples of 2^doublings."""
    _, h, w = shape
    k = 2**doublings
    if h % k or w % k or h < k or w < k:
        raise ValueError(
            f"a {h}×{w} sample does not fit {doublings} doublings: both sides must be positive multiples of {k}"
        )
    return h // k, w // k


def edge_map(images):
    """B×1×H×W: each pixel's largest difference (over channels) from the mean of its 3×3
    neighbourhood, spread over a 5×5 neighbourhood, so both sides of an edge count."""
    local = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, 1)
    return F.max_pool2d((images - local).abs().amax(1, keepdim=True), 5, 1, 2)


def edge_weights(images, extra: float):
    """B×1×H×W per-pixel loss weights for images in [-1, 1]: 1, and ``1 + extra`` near an edge.
    Objects are a few percent of a scene's pixels: a reconstruction loss weighted up near edges
    keeps an autoencoder from learning the backgrounds and blurring the objects."""
    return 1 + extra * (edge_map(images) > 0.05).float()
