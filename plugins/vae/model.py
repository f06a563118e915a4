"""The conditional VAE network (imports torch; loaded only when the generator loads)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class VAEConfig:
    """Architecture of a :class:`ConditionalVAE`; saved as config.json beside the weights."""

    family: str = "vae"
    image_size: int = 64
    latent_dim: int = 8
    text_dim: int = 384
    encoder: str = "all-MiniLM-L6-v2"
    cond_dim: int = 256
    width: int = 128
    queries: int = 4
    #: decoder channels from the 4×4 seed, one entry per doubling; a final pixel shuffle doubles
    #: once more to the full image (a convolution stack at full resolution costs most on a CPU)
    channels: list[int] = field(default_factory=lambda: [128, 128, 64, 32])
    recon_sigma: float = 0.1
    #: weight of the reconstruction loss for a latent drawn from the prior (see ``loss``)
    prior_weight: float = 1.0
    training: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> "VAEConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class TextCondition(nn.Module):
    """Token embeddings → one conditioning vector: a transformer layer over the projected tokens
    lets attributes bind to their objects; learned queries then pool what the decoder needs."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.proj = nn.Linear(cfg.text_dim, cfg.width)
        self.layer = nn.TransformerEncoderLayer(cfg.width, nhead=4, dim_feedforward=cfg.width * 2, dropout=0.0, batch_first=True)
        self.queries = nn.Parameter(torch.randn(cfg.queries, cfg.width) * 0.02)
        self.pool = nn.MultiheadAttention(cfg.width, num_heads=4, batch_first=True)
        self.out = nn.Sequential(
            nn.Linear(cfg.queries * cfg.width + cfg.text_dim, cfg.cond_dim), nn.SiLU(), nn.Linear(cfg.cond_dim, cfg.cond_dim)
        )

    def forward(self, tokens, mask, pooled):
        """(condition vector B×cond_dim, token states B×L×width, padding mask B×L)."""
        pad = mask < 0.5
        h = self.layer(self.proj(tokens), src_key_padding_mask=pad)
        q = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        p, _ = self.pool(q, h, h, key_padding_mask=pad, need_weights=False)
        return Condition(self.out(torch.cat([p.flatten(1), pooled], dim=1)), h, pad)


@dataclass
class Condition:
    vector: torch.Tensor
    tokens: torch.Tensor
    pad: torch.Tensor


class SpatialCrossAttention(nn.Module):
    """Each feature-map cell, tagged with a learned position embedding, attends over the token
    states. Measured: without it the decoder must route "top left" through one global vector
    and plateaus at the background-only solution; with it each cell asks what is at its place."""

    def __init__(self, channels: int, cells: int, width: int):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(cells, channels) * 0.02)
        self.kv = nn.Linear(width, channels)
        self.attn = nn.MultiheadAttention(channels, num_heads=4, batch_first=True)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x, cond: "Condition"):
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

    def forward(self, x, cond):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = F.silu(self.norm1(self.conv1(x)))
        scale, shift = self.film(cond.vector)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(self.conv2(h)) * (1 + scale) + shift
        return F.silu(h)


class ConditionalVAE(nn.Module):
    """A conditional VAE: q(z | image, text) and p(image | z, text), z ~ N(0, I) at sampling."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        if cfg.image_size != 8 * 2 ** (len(ch) - 1):
            raise ValueError(f"image_size {cfg.image_size} does not fit {len(ch)} channel entries (4 × 2^n, then ×2)")
        self.condition = TextCondition(cfg)
        # Posterior encoder: the decoder's channel plan in reverse, stride-2 convolutions.
        enc, cin = [], 3
        for cout in reversed(ch):
            enc += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU()]
            cin = cout
        self.encoder = nn.Sequential(*enc)
        self.posterior = nn.Linear(cin * 16 + cfg.cond_dim, 2 * cfg.latent_dim)
        self.seed = nn.Linear(cfg.latent_dim + cfg.cond_dim, ch[0] * 16)
        self.blocks = nn.ModuleList(FiLMBlock(a, b, cfg.cond_dim) for a, b in zip(ch[:-1], ch[1:]))
        # cross-attention on the 4×4 seed and after the first doubling (8×8): coarse enough to be cheap
        self.cross = nn.ModuleList(SpatialCrossAttention(c, (4 * 2**i) ** 2, cfg.width) for i, c in enumerate(ch[:2]))
        self.to_rgb = nn.Sequential(nn.Conv2d(ch[-1], 12, 3, padding=1), nn.PixelShuffle(2))

    def encode(self, images, cond: Condition):
        h = self.encoder(images * 2 - 1).flatten(1)
        mu, logvar = self.posterior(torch.cat([h, cond.vector], dim=1)).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def decode(self, z, cond: Condition):
        x = self.seed(torch.cat([z, cond.vector], dim=1)).view(z.shape[0], self.cfg.channels[0], 4, 4)
        x = self.cross[0](x, cond)
        for i, block in enumerate(self.blocks):
            x = block(x, cond)
            if i + 1 < len(self.cross):
                x = self.cross[i + 1](x, cond)
        return torch.sigmoid(self.to_rgb(x))

    def loss(self, images, tokens, mask, pooled, generator=None):
        """Negative ELBO per image (Gaussian likelihood with ``recon_sigma``), and its parts."""
        cond = self.condition(tokens, mask, pooled)
        mu, logvar = self.encode(images, cond)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device)
        z = mu + eps * torch.exp(0.5 * logvar)
        recon = self.decode(z, cond)
        scale = 1 / (2 * self.cfg.recon_sigma**2)
        rec = ((recon - images) ** 2).flatten(1).sum(1).mean() * scale
        kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)).mean()
        # The posterior sees the image, so on its own the decoder learns to read the objects from z
        # and ignore the text (measured: position at chance). Decoding a prior sample against the
        # same image forces the content to come from the text, leaving z only the jitter.
        z_prior = torch.randn(mu.shape, generator=generator, device=mu.device)
        prior = ((self.decode(z_prior, cond) - images) ** 2).flatten(1).sum(1).mean() * scale
        total = rec + kl + self.cfg.prior_weight * prior
        return total, {"recon": rec.item(), "kl": kl.item(), "prior": prior.item()}

    @torch.no_grad()
    def sample(self, tokens, mask, pooled, noise, temperature: float = 1.0):
        return self.decode(noise * temperature, self.condition(tokens, mask, pooled))


def save(model: ConditionalVAE, folder: "str | Path") -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``folder`` (each file atomically)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp_w, tmp_c = folder / (WEIGHTS_NAME + ".tmp"), folder / (CONFIG_NAME + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp_w))
    tmp_c.write_text(json.dumps(asdict(model.cfg), indent=2) + "\n")
    tmp_w.replace(folder / WEIGHTS_NAME)
    tmp_c.replace(folder / CONFIG_NAME)
    return folder


def load(folder: "str | Path", device: str = "cpu") -> ConditionalVAE:
    """A model from a folder written by :func:`save`. Reads weights through safetensors only."""
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg = VAEConfig.from_dict(json.loads((folder / CONFIG_NAME).read_text()))
    model = ConditionalVAE(cfg)
    model.load_state_dict(load_file(str(folder / WEIGHTS_NAME), device=device))
    return model.to(device).eval()
