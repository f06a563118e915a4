"""The Shapes diffusion model's two networks, diffusers' ``UNet2DConditionModel`` and ``AutoencoderKL``, in plain torch.

Importing diffusers takes seconds on a cold start (it brings transformers, scipy and sympy with it). The Shapes model
(:mod:`.shapes`) needs two small networks of it, built from a handful of arguments; this module builds the same
modules (the same parameter names and shapes, so the same state dicts load with ``strict=True``) and runs the same
operations in the same order, attention through ``F.scaled_dot_product_attention`` as diffusers' default
``AttnProcessor2_0`` calls it. Where diffusers changes a tensor's memory layout (which changes a convolution's last
bits: the shortcut's input in training mode, upsampling's input from a batch of 64), so does this module. The outputs
are therefore diffusers' bit for bit (``torch.equal``), in eval and in training mode: tests/test_plain_diffusion.py
checks Loom's tiny configuration, other depths and widths and the shipped weights in float32 on CPU (other devices and
dtypes make the same calls, untested here).

Only what Loom builds is supported: :func:`plain_unet` takes the arguments ``ShapesDiffusionModel`` gives
``UNet2DConditionModel`` (``DownBlock2D`` then ``CrossAttnDownBlock2D``s, their mirror going up, a cross-attention mid
block, a ``projection`` class embedding, every other argument at diffusers' default) and :func:`plain_autoencoder`
the dict ``build_autoencoder`` takes; anything else raises ValueError. Left out: diffusers' loading and saving
(``from_pretrained``, ``config``), adapters (LoRA), attention processors and slicing, gradient checkpointing, FreeU,
ControlNet residuals, the autoencoder's tiling, slicing and posterior sampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

#: The arguments :func:`plain_unet` takes, at diffusers' own defaults (a default block type is refused, as any other
#: than Loom's).
UNET_DEFAULTS = {
    "sample_size": None, "in_channels": 4, "out_channels": 4, "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, "layers_per_block": 2, "norm_num_groups": 32,
    "cross_attention_dim": 1280, "attention_head_dim": 8, "class_embed_type": None,
    "projection_class_embeddings_input_dim": None,
}  # fmt: skip


@dataclass
class Output:
    """What diffusers' ``UNet2DConditionOutput`` and ``DecoderOutput`` carry."""

    sample: torch.Tensor


class Resnet(nn.Module):
    """``ResnetBlock2D`` as diffusers' defaults build it: pre-norm, SiLU, the time embedding added between the two
    convolutions, a 1×1 shortcut where the width changes, output scale 1 (dividing by 1.0 changes no bit)."""

    def __init__(self, cin: int, cout: int, temb: int | None, groups: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout) if temb is not None else None
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is None:
            return x + h
        # diffusers makes the input contiguous in training; the shortcut conv's numbers depend on the layout
        return self.conv_shortcut(x.contiguous() if self.training else x) + h


class Downsample(nn.Module):
    """``Downsample2D(use_conv=True, name="op")``: a stride-2 conv; with padding 0 (the autoencoder's) diffusers pads
    only the right and bottom edges first."""

    def __init__(self, channels: int, padding: int) -> None:
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)) if self.padding == 0 else x)


class Upsample(nn.Module):
    """``Upsample2D(use_conv=True)``: nearest ×2 (or to ``size``, where the UNet's input side was odd), then a conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size=None) -> torch.Tensor:
        factor = 2 if size is None else max(f / s for f, s in zip(size, x.shape[-2:]))
        if x.shape[0] >= 64 or x.numel() * factor > 2**31:  # as diffusers, for the conv's layout (so its numbers)
            x = x.contiguous()
        if size is None:
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class Attention(nn.Module):
    """diffusers' ``Attention`` run by ``AttnProcessor2_0`` on B×N×C tokens: optional GroupNorm over channels,
    q/k/v projections, heads split as ``view(B, -1, heads, d).transpose(1, 2)``, SDPA at its default scale."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim=None, bias=False, groups=None, eps=1e-5):
        super().__init__()
        inner, self.heads = heads * head_dim, heads
        self.group_norm = nn.GroupNorm(groups, dim, eps=eps) if groups else None
        self.to_q = nn.Linear(dim, inner, bias=bias)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=bias)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, context=None, bias=None) -> torch.Tensor:
        b = x.shape[0]
        if bias is not None:  # B×1×L: prepare_attention_mask's repeat per head, then the processor's 4-d view
            if bias.shape[-1] != (x if context is None else context).shape[1]:
                raise ValueError(f"the attention mask covers {bias.shape[-1]} tokens, the keys are more or fewer")
            bias = bias.repeat_interleave(self.heads, dim=0, output_size=bias.shape[0] * self.heads)
            bias = bias.view(b, self.heads, -1, bias.shape[-1])
        if self.group_norm is not None:
            x = self.group_norm(x.transpose(1, 2)).transpose(1, 2)
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        d = k.shape[-1] // self.heads
        q, k, v = (t.view(b, -1, self.heads, d).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(b, -1, self.heads * d).to(q.dtype)
        return self.to_out[1](self.to_out[0](out))


class SpatialAttention(Attention):
    """The autoencoder's mid-block attention: one head over all pixels of a B×C×H×W map, with a residual."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__(channels, 1, channels, bias=True, groups=groups, eps=1e-6)

    def forward(self, x: torch.Tensor, context=None, bias=None) -> torch.Tensor:
        b, c, h, w = x.shape
        out = super().forward(x.view(b, c, h * w).transpose(1, 2))
        return out.transpose(-1, -2).reshape(b, c, h, w) + x


class GEGLU(nn.Module):
    """The feed-forward's gated GELU: one projection to twice the width, halves multiplied."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):
    """diffusers' ``FeedForward`` (GEGLU, 4× wide); the Dropout keeps the ``net.2`` name of the output layer."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * 4), nn.Dropout(0.0), nn.Linear(dim * 4, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TransformerBlock(nn.Module):
    """``BasicTransformerBlock`` (layer_norm): self-attention, cross-attention to the tokens, feed-forward."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int) -> None:
        super().__init__()
        self.norm1, self.attn1 = nn.LayerNorm(dim), Attention(dim, heads, head_dim)
        self.norm2, self.attn2 = nn.LayerNorm(dim), Attention(dim, heads, head_dim, context_dim)
        self.norm3, self.ff = nn.LayerNorm(dim), FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, bias=None) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context, bias) + x
        return self.ff(self.norm3(x)) + x


class Transformer2D(nn.Module):
    """``Transformer2DModel`` on a feature map (continuous input, 1×1 conv projections: diffusers'
    ``use_linear_projection=False`` default), one block, with a residual."""

    def __init__(self, heads: int, channels: int, context_dim: int, groups: int) -> None:
        super().__init__()
        inner = heads * (channels // heads)
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(inner, heads, channels // heads, context_dim)])
        self.proj_out = nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor, bias=None) -> torch.Tensor:
        b, _, h, w = x.shape
        y = self.proj_in(self.norm(x))
        inner = y.shape[1]
        y = y.permute(0, 2, 3, 1).reshape(b, h * w, inner)
        for block in self.transformer_blocks:
            y = block(y, context, bias)
        y = y.reshape(b, h, w, inner).permute(0, 3, 1, 2).contiguous()
        return self.proj_out(y) + x


class Down(nn.Module):
    """``DownBlock2D``, ``CrossAttnDownBlock2D`` (``attend`` makes each resnet's transformer) and
    ``DownEncoderBlock2D`` (no time embedding): resnets, then a strided conv; every output is a skip for the UNet."""

    def __init__(self, ins: list[int], cout: int, temb, groups: int, eps: float, attend, downsample: bool, pad: int):
        super().__init__()
        self.attentions = nn.ModuleList(attend() for _ in ins) if attend else None  # registered first, as diffusers
        self.resnets = nn.ModuleList(Resnet(cin, cout, temb, groups, eps) for cin in ins)
        self.downsamplers = nn.ModuleList([Downsample(cout, pad)]) if downsample else None

    def forward(self, x: torch.Tensor, temb=None, context=None, bias=None):
        skips = ()
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            x = x if self.attentions is None else self.attentions[i](x, context, bias)
            skips += (x,)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips += (x,)
        return x, skips


class Up(nn.Module):
    """``CrossAttnUpBlock2D``, ``UpBlock2D`` and ``UpDecoderBlock2D``: resnets (in the UNet each first takes the
    latest skip, concatenated on channels), then nearest upsampling and a conv."""

    def __init__(self, ins: list[int], cout: int, temb, groups: int, eps: float, attend, upsample: bool) -> None:
        super().__init__()
        self.attentions = nn.ModuleList(attend() for _ in ins) if attend else None
        self.resnets = nn.ModuleList(Resnet(cin, cout, temb, groups, eps) for cin in ins)
        self.upsamplers = nn.ModuleList([Upsample(cout)]) if upsample else None

    def forward(self, x: torch.Tensor, skips=None, temb=None, context=None, bias=None, size=None) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = resnet(x if skips is None else torch.cat([x, skips[-1 - i]], dim=1), temb)
            x = x if self.attentions is None else self.attentions[i](x, context, bias)
        return x if self.upsamplers is None else self.upsamplers[0](x, size)


class Mid(nn.Module):
    """``UNetMidBlock2DCrossAttn`` and the autoencoder's ``UNetMidBlock2D``: resnet, attention, resnet."""

    def __init__(self, channels: int, temb, groups: int, eps: float, attention: nn.Module) -> None:
        super().__init__()
        self.attentions = nn.ModuleList([attention])
        self.resnets = nn.ModuleList(Resnet(channels, channels, temb, groups, eps) for _ in range(2))

    def forward(self, x: torch.Tensor, temb=None, context=None, bias=None) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        return self.resnets[1](self.attentions[0](x, context, bias), temb)


class TimestepEmbedding(nn.Module):
    """diffusers' ``TimestepEmbedding``: linear, SiLU, linear (the timestep's and the pooled caption's)."""

    def __init__(self, cin: int, dim: int) -> None:
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(cin, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


def timestep_features(timestep, sample: torch.Tensor, dim: int) -> torch.Tensor:
    """``get_time_embed`` then ``Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)``: a number becomes a
    1-element tensor (float64 or int64, 32-bit where the device lacks them), 0-d is lifted, all are expanded to the
    batch; [cos, sin] of t times 10000^(-i/half), float32 throughout."""
    if not torch.is_tensor(timestep):
        dtype = torch.float64 if isinstance(timestep, float) else torch.int64
        if sample.device.type in ("mps", "npu", "neuron"):
            dtype = {torch.float64: torch.float32, torch.int64: torch.int32}[dtype]
        timestep = torch.tensor([timestep], dtype=dtype, device=sample.device)
    elif timestep.ndim == 0:
        timestep = timestep[None].to(sample.device)
    timestep = timestep.expand(sample.shape[0])
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(start=0, end=half, dtype=torch.float32, device=timestep.device)
    angles = timestep[:, None].float() * torch.exp(exponent / half)[None, :]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return (F.pad(emb, (0, 1, 0, 0)) if dim % 2 else emb).to(dtype=sample.dtype)


class UNet(nn.Module):
    """``UNet2DConditionModel`` as :func:`plain_unet` describes it; attribute names are diffusers' (state dicts)."""

    def __init__(self, widths, layers, cin, cout, context_dim, heads, groups, class_dim, sample_size=None) -> None:
        super().__init__()
        n, temb, self.sample_size = len(widths), widths[0] * 4, sample_size
        self.conv_in = nn.Conv2d(cin, widths[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(widths[0], temb)
        self.class_embedding = TimestepEmbedding(class_dim, temb)

        def attend(ch):  # attention_head_dim is the number of heads in diffusers' UNet (its issue #2011)
            return lambda: Transformer2D(heads, ch, context_dim, groups)

        # registered before the mid block, as diffusers does (the state dict's order)
        self.down_blocks, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        for i, w in enumerate(widths):  # the first level has no attention (Loom's choice), the last no downsampling
            ins = [widths[max(i - 1, 0)]] + [w] * (layers - 1)
            self.down_blocks.append(Down(ins, w, temb, groups, 1e-5, attend(w) if i else None, i < n - 1, pad=1))
        self.mid_block = Mid(widths[-1], temb, groups, 1e-5, attend(widths[-1])())
        rev = widths[::-1]
        for i, w in enumerate(rev):  # layers + 1 resnets, each taking a skip; the last one the level below's
            prev, below = rev[max(i - 1, 0)], rev[min(i + 1, n - 1)]
            ins = [(prev if j == 0 else w) + (below if j == layers else w) for j in range(layers + 1)]
            self.up_blocks.append(Up(ins, w, temb, groups, 1e-5, attend(w) if i < n - 1 else None, i < n - 1))
        self.conv_norm_out = nn.GroupNorm(groups, widths[0], eps=1e-5)
        self.conv_out = nn.Conv2d(widths[0], cout, 3, padding=1)

    def forward(self, sample, timestep, encoder_hidden_states, encoder_attention_mask=None, class_labels=None):
        """The noise (or v) prediction for ``sample`` (B×C×H×W); ``encoder_attention_mask`` (B×L, 1 keep, 0 drop)
        becomes diffusers' additive bias, (1 - mask) × -10000. Unlike diffusers' forward, the fourth positional
        argument is the mask (diffusers': ``class_labels``); Loom passes both by name."""
        if class_labels is None:
            raise ValueError("class_labels should be provided when num_class_embeds > 0")
        bias = None
        if encoder_attention_mask is not None:
            bias = ((1 - encoder_attention_mask.to(sample.dtype)) * -10000.0).unsqueeze(1)
        emb = self.time_embedding(timestep_features(timestep, sample, self.conv_in.out_channels))
        emb = emb + self.class_embedding(class_labels).to(dtype=sample.dtype)
        x = self.conv_in(sample)
        skips = (x,)
        for block in self.down_blocks:
            x, states = block(x, emb, encoder_hidden_states, bias)
            skips += states
        x = self.mid_block(x, emb, encoder_hidden_states, bias)
        odd = any(side % 2 ** (len(self.up_blocks) - 1) for side in sample.shape[-2:])
        for block in self.up_blocks:
            k = len(block.resnets)
            mine, skips = skips[-k:], skips[:-k]
            # where a side was odd, upsampling goes back to the skip's size rather than doubling
            size = skips[-1].shape[2:] if odd and block.upsamplers is not None else None
            x = block(x, mine, emb, encoder_hidden_states, bias, size)
        return Output(self.conv_out(F.silu(self.conv_norm_out(x))))


class DiagonalGaussian:
    """diffusers' ``DiagonalGaussianDistribution``: quant_conv's output split into mean and log-variance."""

    def __init__(self, parameters: torch.Tensor) -> None:
        self.parameters = parameters
        self.mean, logvar = torch.chunk(parameters, 2, dim=1)
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.std, self.var = torch.exp(0.5 * self.logvar), torch.exp(self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL divergence from the standard normal, per item."""
        return 0.5 * torch.sum(torch.pow(self.mean, 2) + self.var - 1.0 - self.logvar, dim=[1, 2, 3])


class Encoder(nn.Module):
    def __init__(self, widths: list[int], layers: int, latent: int, groups: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            Down([widths[max(i - 1, 0)]] + [w] * (layers - 1), w, None, groups, 1e-6, None, i < len(widths) - 1, pad=0)
            for i, w in enumerate(widths)
        )
        self.mid_block = Mid(widths[-1], None, groups, 1e-6, SpatialAttention(widths[-1], groups))
        self.conv_norm_out = nn.GroupNorm(groups, widths[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(widths[-1], 2 * latent, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)[0]
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nn.Module):
    def __init__(self, widths: list[int], layers: int, latent: int, groups: int) -> None:
        super().__init__()
        rev = widths[::-1]
        self.conv_in = nn.Conv2d(latent, rev[0], 3, padding=1)
        self.up_blocks = nn.ModuleList(
            Up([rev[max(i - 1, 0)]] + [w] * layers, w, None, groups, 1e-6, None, i < len(rev) - 1)
            for i, w in enumerate(rev)
        )
        self.mid_block = Mid(rev[0], None, groups, 1e-6, SpatialAttention(rev[0], groups))
        self.conv_norm_out = nn.GroupNorm(groups, widths[0], eps=1e-6)
        self.conv_out = nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Autoencoder(nn.Module):
    """``AutoencoderKL`` (3-channel images, ``DownEncoderBlock2D``/``UpDecoderBlock2D``, no tiling or slicing)."""

    def __init__(self, widths: list[int], layers: int, latent: int, groups: int) -> None:
        super().__init__()
        self.encoder = Encoder(widths, layers, latent, groups)
        self.decoder = Decoder(widths, layers, latent, groups)
        self.quant_conv = nn.Conv2d(2 * latent, 2 * latent, 1)
        self.post_quant_conv = nn.Conv2d(latent, latent, 1)

    def encode(self, x: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(latent_dist=DiagonalGaussian(self.quant_conv(self.encoder(x))))

    def decode(self, z: torch.Tensor) -> Output:
        return Output(self.decoder(self.post_quant_conv(z)))

    def forward(self, x: torch.Tensor) -> Output:
        return self.decode(self.encode(x).latent_dist.mode())


def plain_unet(**kwargs) -> UNet:
    """The :class:`UNet` that ``UNet2DConditionModel(**kwargs)`` builds, for the arguments ``ShapesDiffusionModel``
    passes (:data:`UNET_DEFAULTS`): its block types, single integers, no others. Anything else is a ValueError naming
    it, not a network that would silently differ from diffusers'."""
    unknown = sorted(set(kwargs) - set(UNET_DEFAULTS))
    if unknown:
        raise ValueError(f"plain_unet does not support the UNet2DConditionModel arguments {unknown}")
    cfg = {**UNET_DEFAULTS, **kwargs}
    n = len(cfg["block_out_channels"])
    wanted = {
        "down_block_types": ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * (n - 1),
        "up_block_types": ["CrossAttnUpBlock2D"] * (n - 1) + ["UpBlock2D"],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "class_embed_type": "projection",
    }
    for key, want in wanted.items():
        got = list(cfg[key]) if isinstance(cfg[key], (list, tuple)) else cfg[key]
        if got != want:
            raise ValueError(f"plain_unet supports {key}={want!r} (Loom's Shapes UNet), not {got!r}")
    names = ("layers_per_block", "in_channels", "out_channels", "cross_attention_dim", "attention_head_dim")
    names += ("norm_num_groups", "projection_class_embeddings_input_dim")
    numbers = [cfg[name] for name in names] + list(cfg["block_out_channels"])
    for name, value in zip(names + ("block_out_channels",) * n, numbers):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"plain_unet supports only single integers for {name}, not {value!r}")
    layers, cin, cout, context, heads, groups, class_dim = numbers[: len(names)]
    return UNet(numbers[len(names) :], layers, cin, cout, context, heads, groups, class_dim, cfg["sample_size"])


def norm_groups(widths: list[int]) -> int:
    """GroupNorm groups for a network of these widths: four channels per group at the narrowest
    level (at most 32 groups). One channel per group (diffusers' 32 groups on 16 or 32 channels)
    normalises away each channel's mean, so an autoencoder's last norm erases the flat colours
    Shapes is made of: measured, such an autoencoder's L1 stalled near 0.55 over 120 steps where
    one with four channels per group went on falling."""
    return max(1, min(32, math.gcd(*widths) // 4))


def plain_autoencoder(spec: dict) -> Autoencoder:
    """The :class:`Autoencoder` ``shapes.build_autoencoder(spec)`` builds: ``block_out_channels``,
    ``latent_channels``, ``layers_per_block`` (1), ``norm_num_groups`` (None: :func:`norm_groups`)."""
    widths = [int(w) for w in spec["block_out_channels"]]
    groups = int(spec.get("norm_num_groups") or norm_groups(widths))
    return Autoencoder(widths, int(spec.get("layers_per_block", 1)), int(spec["latent_channels"]), groups)
