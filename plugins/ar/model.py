"""The autoregressive family's networks: a VQ-VAE image tokenizer and a token transformer with a
key/value cache (imports torch; loaded only when the generator loads or trains)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from loom.plugins.common.nn import TextCondition, edge_weights, small_normal
from loom.plugins.common.saved import SavedModel, TextConditionedConfig


class ARConfig(TextConditionedConfig):
    """Architecture of tokenizer and transformer; saved as config.json beside the weights."""

    family: str = "ar"
    #: tokenizer: codebook entries, code width, and channels at full resolution and after each
    #: halving (so three entries: 4× down, a 16×16 grid of tokens for a 64×64 image; four give 8×8)
    codebook: int = 1024
    code_dim: int = 8
    vq_channels: list[int] = [16, 32, 64]
    #: transformer
    d_model: int = 192
    layers: int = 4
    heads: int = 4
    queries: int = 4
    training: dict = {}

    @property
    def grid(self) -> int:
        return self.image_size // 2 ** (len(self.vq_channels) - 1)

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
            nn.GroupNorm(8, ch),
            nn.SiLU(),
            nn.Conv2d(ch, ch, 3, padding=1),
            nn.GroupNorm(8, ch),
            nn.SiLU(),
            nn.Conv2d(ch, ch, 3, padding=1),
        )

    def forward(self, x):
        return x + self.body(x)


class VQTokenizer(nn.Module):
    """Image ↔ grid of codebook indices (van den Oord et al. 2017), halved once per extra entry of
    ``vq_channels``. Encodings and codes are compared as unit vectors in a narrow space (ViT-VQGAN's
    factorised, l2-normalised lookup): with plain Euclidean lookup in 32 dimensions only ~45 of 512
    codes were ever used and reconstructions were blurry. The codebook follows exponential moving
    averages of the encodings assigned to it; it starts on encodings of the first batch, and an
    entry left unused is moved onto an encoding of the current batch (no dead codes)."""

    def __init__(self, cfg: ARConfig, decay: float = 0.99, usage_decay: float = 0.95):
        super().__init__()
        chans = cfg.vq_channels
        self.decay, self.usage_decay = decay, usage_decay
        # no residual blocks at full resolution: they cost most of a CPU step and flat-coloured
        # shapes need little there
        enc: list[nn.Module] = [nn.Conv2d(3, chans[0], 3, padding=1), nn.SiLU()]
        for a, b in zip(chans, chans[1:]):
            enc += [nn.Conv2d(a, b, 4, stride=2, padding=1), ResBlock(b)]
        enc += [nn.GroupNorm(8, chans[-1]), nn.SiLU(), nn.Conv2d(chans[-1], cfg.code_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [
            nn.Conv2d(cfg.code_dim, chans[-1], 3, padding=1),
            ResBlock(chans[-1]),
            ResBlock(chans[-1]),
        ]
        for i in range(len(chans) - 1, 0, -1):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(chans[i], chans[i - 1], 3, padding=1)]
            dec += [ResBlock(chans[i - 1])] if i > 1 else [nn.SiLU()]
        dec += [nn.Conv2d(chans[0], 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        self.register_buffer("codes", F.normalize(torch.randn(cfg.codebook, cfg.code_dim), dim=1))
        # zero usage: every entry counts as dead at the first training step and starts on the data
        self.register_buffer("usage", torch.zeros(cfg.codebook))
        self.register_buffer("code_sum", self.codes.clone())

    def _encode(self, images):
        """Unit encodings B×H'×W'×code_dim."""
        return F.normalize(self.encoder(images * 2 - 1).permute(0, 2, 3, 1), dim=-1)

    def _nearest(self, flat):
        # for unit vectors the nearest code is the one with the largest dot product
        return (flat @ self.codes.t()).argmax(1)

    @torch.no_grad()
    def encode(self, images):
        """B×3×H×W in [0, 1] → B×(H'·W') indices, row-major."""
        z = self._encode(images)
        b, h, w, c = z.shape
        return self._nearest(z.reshape(-1, c)).view(b, h * w)

    def decode(self, indices):
        b, n = indices.shape
        side = int(round(n**0.5))
        z = self.codes[indices].view(b, side, side, -1).permute(0, 3, 1, 2)
        return torch.sigmoid(self.decoder(z))

    def loss(self, images, generator=None, edge_weight: float = 0.0):
        """(reconstruction + commitment loss, parts); updates the codebook in training mode. Pixels
        near an edge weigh ``1 + edge_weight`` in the reconstruction loss (the reported
        ``vq_recon`` stays the plain mean squared error)."""
        z = self._encode(images)
        b, h, w, c = z.shape
        flat = z.reshape(-1, c)
        if self.training:
            self._update_codes(flat.detach(), generator)
        idx = self._nearest(flat.detach())
        quant = self.codes[idx]
        commit = F.mse_loss(flat, quant.detach())
        # straight-through: the decoder sees the codes, the encoder gets the decoder's gradient
        st = (flat + (quant - flat).detach()).view(b, h, w, c).permute(0, 3, 1, 2)
        recon = torch.sigmoid(self.decoder(st))
        error = (recon - images).square()
        rec = error.mean()
        weighted = (error * edge_weights(images * 2 - 1, edge_weight)).mean() if edge_weight else rec
        used = torch.unique(idx).numel()
        return weighted + 0.25 * commit, {"vq_recon": rec.item(), "codes_used": float(used)}

    @torch.no_grad()
    def _update_codes(self, flat, generator):
        k = self.codes.shape[0]
        expected = flat.shape[0] / k
        # usage is a fast average (tens of steps) so that entries stranded while the encoder
        # moves are put back on the data soon; the codes themselves average slowly
        dead = self.usage < 0.02 * expected
        if dead.any():
            pick = torch.randint(flat.shape[0], (int(dead.sum()),), generator=generator)
            self.codes[dead] = flat[pick]
            self.code_sum[dead] = flat[pick]
            self.usage[dead] = expected
        idx = self._nearest(flat)
        counts = torch.bincount(idx, minlength=k).type(flat.dtype)
        self.usage.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
        sums = torch.zeros_like(self.code_sum).index_add_(0, idx, flat)
        self.code_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        self.codes.copy_(F.normalize(self.code_sum, dim=1))


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
        self.pos = small_normal(cfg.seq_len, d)
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
    def sample(self, tokens, mask, pooled, generators, temperature=1.0, top_k=0, length=None, guidance_scale=1.0):
        """Token indices B×T, one position at a time through the key/value cache. Item i draws
        from ``generators[i]``, so its tokens do not depend on the rest of the batch. With
        ``guidance_scale`` > 1 the logits are pushed away from those under the empty caption
        (classifier-free guidance, as Parti samples)."""
        length = length or self.pos.shape[0]
        b = tokens.shape[0]
        guided = guidance_scale > 1
        if guided:
            empty = empty_condition(tokens, mask, pooled)
            tokens, mask, pooled = (torch.cat([c, e]) for c, e in zip((tokens, mask, pooled), empty))
        start, text_kv, text_mask = self.context(tokens, mask, pooled)
        caches = [{} for _ in self.blocks]
        x = start + self.pos[0]
        out = []
        for t in range(length):
            for blk, kv, cache in zip(self.blocks, text_kv, caches):
                x = blk(x, kv, text_mask, cache)
            logits = self.head(self.norm(x[:, -1]))
            if guided:
                cond, uncond = logits[:b], logits[b:]
                logits = uncond + guidance_scale * (cond - uncond)
            nxt = pick(logits, generators, temperature, top_k)
            out.append(nxt)
            if t + 1 < length:
                fed = torch.cat([nxt, nxt]) if guided else nxt
                x = self.tok(fed).unsqueeze(1) + self.pos[t + 1]
        return torch.stack(out, dim=1)


def empty_condition(tokens, mask, pooled):
    """The caption that training substitutes for dropped ones: zero states, nothing masked."""
    return torch.zeros_like(tokens), torch.ones_like(mask), torch.zeros_like(pooled)


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


class ARModel(SavedModel):
    """Tokenizer + transformer: what the generator loads."""

    config_class = ARConfig

    def __init__(self, cfg: ARConfig):
        super().__init__(cfg)
        self.tokenizer = VQTokenizer(cfg)
        self.prior = TokenTransformer(cfg)

    @torch.no_grad()
    def generate(
        self, tokens, mask, pooled, generators, temperature: float = 1.0, top_k: int = 16, guidance_scale: float = 1.0
    ):
        codes = self.prior.sample(tokens, mask, pooled, generators, temperature, top_k, guidance_scale=guidance_scale)
        return self.tokenizer.decode(codes)
