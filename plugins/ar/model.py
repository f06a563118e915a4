"""The autoregressive family's networks: a VQ-VAE image tokenizer and a token transformer with a
key/value cache (imports torch; loaded only when the generator loads or trains)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from loom.plugins.common.nn import TextCondition, read_folder, save_folder


@dataclass
class ARConfig:
    """Architecture of tokenizer and transformer; saved as config.json beside the weights."""

    family: str = "ar"
    image_size: int = 64
    text_dim: int = 384
    encoder: str = "all-MiniLM-L6-v2"
    #: tokenizer: codebook entries, code width, channels at full, 1/2 and 1/4 resolution
    codebook: int = 512
    code_dim: int = 32
    vq_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    #: transformer
    d_model: int = 128
    layers: int = 4
    heads: int = 4
    queries: int = 4
    training: dict = field(default_factory=dict)

    @property
    def grid(self) -> int:
        return self.image_size // 4

    @property
    def seq_len(self) -> int:
        return self.grid**2


# ------------------------------------------------------------------------------------------
# Tokenizer
# ------------------------------------------------------------------------------------------


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
            nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
        )

    def forward(self, x):
        return x + self.body(x)


class VQTokenizer(nn.Module):
    """Image ↔ grid of codebook indices (van den Oord et al. 2017), 4× down in each direction.
    The codebook is updated by exponential moving averages of the encodings assigned to it, and
    entries nobody uses are moved onto encodings of the current batch (no dead codes)."""

    def __init__(self, cfg: ARConfig, decay: float = 0.99):
        super().__init__()
        c0, c1, c2 = cfg.vq_channels
        self.decay = decay
        # no residual blocks at full resolution: they cost most of a CPU step and flat-coloured
        # shapes need little there
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c0, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c0, c1, 4, stride=2, padding=1), ResBlock(c1),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), ResBlock(c2),
            nn.GroupNorm(8, c2), nn.SiLU(), nn.Conv2d(c2, cfg.code_dim, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(cfg.code_dim, c2, 3, padding=1), ResBlock(c2), ResBlock(c2),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c2, c1, 3, padding=1), ResBlock(c1),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c1, c0, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c0, 3, 3, padding=1),
        )
        self.register_buffer("codes", torch.randn(cfg.codebook, cfg.code_dim) * 0.1)
        self.register_buffer("usage", torch.ones(cfg.codebook))
        self.register_buffer("code_sum", self.codes.clone())

    def _nearest(self, flat):
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codes.t() + self.codes.pow(2).sum(1)
        return d.argmin(1)

    @torch.no_grad()
    def encode(self, images):
        """B×3×H×W in [0, 1] → B×(H/4·W/4) indices, row-major."""
        z = self.encoder(images * 2 - 1)
        b, c, h, w = z.shape
        return self._nearest(z.permute(0, 2, 3, 1).reshape(-1, c)).view(b, h * w)

    def decode(self, indices):
        b, n = indices.shape
        side = int(round(n**0.5))
        z = self.codes[indices].view(b, side, side, -1).permute(0, 3, 1, 2)
        return torch.sigmoid(self.decoder(z))

    def loss(self, images, generator=None):
        """(reconstruction + commitment loss, parts); updates the codebook in training mode."""
        z = self.encoder(images * 2 - 1)
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        idx = self._nearest(flat.detach())
        quant = self.codes[idx]
        if self.training:
            self._update_codes(flat.detach(), idx, generator)
        commit = F.mse_loss(flat, quant.detach())
        # straight-through: the decoder sees the codes, the encoder gets the decoder's gradient
        st = (flat + (quant - flat).detach()).view(b, h, w, c).permute(0, 3, 1, 2)
        recon = torch.sigmoid(self.decoder(st))
        rec = F.mse_loss(recon, images)
        used = torch.unique(idx).numel()
        return rec + 0.25 * commit, {"vq_recon": rec.item(), "codes_used": float(used)}

    @torch.no_grad()
    def _update_codes(self, flat, idx, generator):
        onehot = F.one_hot(idx, self.codes.shape[0]).type(flat.dtype)
        self.usage.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.code_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        n = self.usage.sum()
        usage = (self.usage + 1e-5) / (n + self.codes.shape[0] * 1e-5) * n
        self.codes.copy_(self.code_sum / usage.unsqueeze(1))
        dead = self.usage < 1e-3
        if dead.any():
            pick = torch.randint(flat.shape[0], (int(dead.sum()),), generator=generator)
            self.codes[dead] = flat[pick]
            self.code_sum[dead] = flat[pick]
            self.usage[dead] = 1.0


# ------------------------------------------------------------------------------------------
# Transformer
# ------------------------------------------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def split(self, x):
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def keys_values(self, x):
        k, v = self.kv(x).chunk(2, dim=-1)
        return self.split(k), self.split(v)

    def forward(self, x, k, v, causal=False, mask=None):
        q = self.split(self.q(x))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        b, h, t, hd = o.shape
        return self.out(o.transpose(1, 2).reshape(b, t, h * hd))


class Block(nn.Module):
    """Causal self-attention over the image tokens, cross-attention to the caption, an MLP."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.n1, self.n2, self.n3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = Attention(d, heads)
        self.cross_attn = Attention(d, heads)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x, text_kv, text_mask, cache=None):
        """``cache`` None: the whole sequence, causally. Otherwise a dict holding this layer's keys and
        values so far; ``x`` is the new position only and its keys/values are appended."""
        h = self.n1(x)
        k, v = self.self_attn.keys_values(h)
        if cache is None:
            x = x + self.self_attn(h, k, v, causal=True)
        else:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
            x = x + self.self_attn(h, k, v)
        x = x + self.cross_attn(self.n2(x), *text_kv, mask=text_mask)
        return x + self.mlp(self.n3(x))


class TokenTransformer(nn.Module):
    """p(token_t | tokens_<t, caption): the first position is fed the caption's pooled condition
    vector, every position cross-attends to the caption's token states."""

    def __init__(self, cfg: ARConfig):
        super().__init__()
        d = cfg.d_model
        self.condition = TextCondition(cfg.text_dim, d, cfg.queries, d)
        self.tok = nn.Embedding(cfg.codebook, d)
        self.pos = nn.Parameter(torch.randn(cfg.seq_len, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, cfg.heads) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.codebook)

    def context(self, tokens, mask, pooled):
        """(start vector B×1×d, per-layer cross-attention keys/values, attention mask)."""
        cond = self.condition(tokens, mask, pooled)
        text_kv = [blk.cross_attn.keys_values(cond.tokens) for blk in self.blocks]
        # True = may attend; padded caption tokens are hidden from every query
        text_mask = (~cond.pad)[:, None, None, :]
        return cond.vector.unsqueeze(1), text_kv, text_mask

    def forward(self, codes, tokens, mask, pooled):
        """Teacher forcing: logits B×T×codebook for every position of ``codes`` (B×T)."""
        start, text_kv, text_mask = self.context(tokens, mask, pooled)
        x = torch.cat([start, self.tok(codes[:, :-1])], dim=1) + self.pos[: codes.shape[1]]
        for blk, kv in zip(self.blocks, text_kv):
            x = blk(x, kv, text_mask)
        return self.head(self.norm(x))

    @torch.no_grad()
    def sample(self, tokens, mask, pooled, generators, temperature=1.0, top_k=0, length=None):
        """Token indices B×T, one position at a time through the key/value cache. Item i draws
        from ``generators[i]``, so its tokens do not depend on the rest of the batch."""
        length = length or self.pos.shape[0]
        start, text_kv, text_mask = self.context(tokens, mask, pooled)
        caches = [{} for _ in self.blocks]
        x = start + self.pos[0]
        out = []
        for t in range(length):
            for blk, kv, cache in zip(self.blocks, text_kv, caches):
                x = blk(x, kv, text_mask, cache)
            logits = self.head(self.norm(x[:, -1]))
            nxt = pick(logits, generators, temperature, top_k)
            out.append(nxt)
            if t + 1 < length:
                x = self.tok(nxt).unsqueeze(1) + self.pos[t + 1]
        return torch.stack(out, dim=1)


def pick(logits, generators, temperature: float, top_k: int):
    """One index per row: argmax at temperature 0, else a draw among the ``top_k`` likeliest."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    return torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators)])


class ARModel(nn.Module):
    """Tokenizer + transformer: what the generator loads."""

    def __init__(self, cfg: ARConfig):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = VQTokenizer(cfg)
        self.prior = TokenTransformer(cfg)

    @torch.no_grad()
    def generate(self, tokens, mask, pooled, generators, temperature: float = 1.0, top_k: int = 16):
        codes = self.prior.sample(tokens, mask, pooled, generators, temperature, top_k)
        return self.tokenizer.decode(codes)


def save(model: ARModel, folder: "str | Path") -> Path:
    return save_folder(model.state_dict(), model.cfg, folder)


def load(folder: "str | Path", device: str = "cpu") -> ARModel:
    """The model from a folder written by :func:`save`; weights through safetensors only."""
    cfg, state = read_folder(folder, ARConfig, device)
    model = ARModel(cfg)
    model.load_state_dict(state)
    return model.to(device).eval()
