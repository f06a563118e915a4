"""Network blocks shared by the first-party families: text conditioning, spatial cross-attention,
FiLM upsampling (imports torch; loaded only when a model loads or trains)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class Condition:
    vector: torch.Tensor
    tokens: torch.Tensor
    pad: torch.Tensor


class TextCondition(nn.Module):
    """Token embeddings → one conditioning vector: a transformer layer over the projected tokens
    lets attributes bind to their objects; learned queries then pool what the decoder needs."""

    def __init__(self, text_dim: int, width: int, queries: int, cond_dim: int):
        super().__init__()
        self.proj = nn.Linear(text_dim, width)
        self.layer = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=width * 2, dropout=0.0, batch_first=True)
        self.queries = nn.Parameter(torch.randn(queries, width) * 0.02)
        self.pool = nn.MultiheadAttention(width, num_heads=4, batch_first=True)
        self.out = nn.Sequential(nn.Linear(queries * width + text_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, tokens, mask, pooled) -> Condition:
        """(condition vector B×cond_dim, token states B×L×width, padding mask B×L)."""
        pad = mask < 0.5
        h = self.layer(self.proj(tokens), src_key_padding_mask=pad)
        q = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        p, _ = self.pool(q, h, h, key_padding_mask=pad, need_weights=False)
        return Condition(self.out(torch.cat([p.flatten(1), pooled], dim=1)), h, pad)


class SpatialCrossAttention(nn.Module):
    """Each feature-map cell, tagged with a learned position embedding, attends over the token
    states. Measured on the VAE: without it the decoder must route "top left" through one global
    vector and plateaus at the background-only solution; with it each cell asks what is at its place."""

    def __init__(self, channels: int, cells: int, width: int):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(cells, channels) * 0.02)
        self.kv = nn.Linear(width, channels)
        self.attn = nn.MultiheadAttention(channels, num_heads=4, batch_first=True)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x, cond: Condition):
        b, c, hgt, wid = x.shape
        q = self.norm(x.flatten(2).transpose(1, 2) + self.pos)
        kv = self.kv(cond.tokens)
        out, _ = self.attn(q, kv, kv, key_padding_mask=cond.pad, need_weights=False)
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
    and a final pixel shuffle (a convolution stack at full resolution costs most on a CPU)."""

    def __init__(self, noise_dim: int, cond_dim: int, width: int, channels: list[int]):
        super().__init__()
        self.channels = channels
        self.seed = nn.Linear(noise_dim + cond_dim, channels[0] * 16)
        self.blocks = nn.ModuleList(FiLMBlock(a, b, cond_dim) for a, b in zip(channels[:-1], channels[1:]))
        self.cross = nn.ModuleList(SpatialCrossAttention(c, (4 * 2**i) ** 2, width) for i, c in enumerate(channels[:2]))
        self.to_rgb = nn.Sequential(nn.Conv2d(channels[-1], 12, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, z, cond: Condition):
        x = self.seed(torch.cat([z, cond.vector], dim=1)).view(z.shape[0], self.channels[0], 4, 4)
        x = self.cross[0](x, cond)
        for i, block in enumerate(self.blocks):
            x = block(x, cond)
            if i + 1 < len(self.cross):
                x = self.cross[i + 1](x, cond)
        return torch.sigmoid(self.to_rgb(x))


def save_folder(state: dict, config, folder: "str | Path") -> Path:
    """Write ``config.json`` (a dataclass) and ``model.safetensors`` (``state``) into ``folder``, each
    atomically. Floating-point weights are stored as float16, which halves the shipped files; they
    load back into float32 models (training checkpoints keep full precision)."""
    from safetensors.torch import save_file

    from loom.core.files import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file({k: _storage(v) for k, v in state.items()}, str(tmp))
    with atomic_path(folder / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(asdict(config), indent=2) + "\n")
    return folder


def _storage(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().contiguous()
    return t.half() if t.is_floating_point() else t


def read_folder(folder: "str | Path", config_cls, device: str = "cpu"):
    """(config, state dict) from a folder :func:`save_folder` wrote; weights through safetensors only."""
    from safetensors.torch import load_file

    folder = Path(folder)
    data = json.loads((folder / CONFIG_NAME).read_text())
    config = config_cls(**{k: v for k, v in data.items() if k in config_cls.__dataclass_fields__})
    return config, load_file(str(folder / WEIGHTS_NAME), device=device)
