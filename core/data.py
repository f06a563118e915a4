"""The data types that flow between components.

Few and coarse: :class:`Text`, :class:`Embedding`, :class:`Latent`, :class:`Image`, :class:`Audio`.
Each is a batch: ``len(x)`` items, ``x.take(indices)`` selects items, ``type(x).concat([...])``
joins batches (all the engine needs to micro-batch any component) and ``x.problem()`` says what
breaks its layout. Tensors are ``torch.Tensor``, but torch is imported only where one is made."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image as PILImage


class Data:
    """Base class of every batch type. Subclasses are dataclasses."""

    #: Short name used in error messages and specs.
    kind: ClassVar[str] = "Data"

    def __len__(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def take(self, indices: Sequence[int]) -> "Data":
        """A new batch holding the items at ``indices`` (in that order, repeats allowed)."""
        raise NotImplementedError

    @classmethod
    def concat(cls, parts: Sequence["Data"]) -> "Data":
        """Join batches of this type, in order."""
        raise NotImplementedError

    def problem(self) -> str | None:
        """What breaks this batch's layout (types, shapes, dtypes, ranges, NaN), or None."""
        return None


def _tensor_problem(
    at: str, t: Any, layout: str, sizes: dict[str, int], bounds: tuple[float, float] | None = None, real: bool = True
) -> str | None:
    """Why tensor ``at`` breaks ``layout`` (float if ``real``; names bind in ``sizes``), finiteness or ``bounds``."""
    dims, shape = layout.split("×"), tuple(getattr(t, "shape", ()))
    known = "".join(f", {d} = {sizes[d]}" for d in dict.fromkeys(dims) if d in sizes)
    expected = [int(d) if d.isdigit() else sizes.setdefault(d, n) for d, n in zip(dims, shape)]
    tensor = hasattr(t, "numel") and (t.is_floating_point() or not real)
    if not tensor or len(shape) != len(dims) or expected != list(shape):
        got = f"{getattr(t, 'dtype', type(t).__name__)} of shape {shape}"
        return f"{at} must be a {'float ' if real else ''}{layout} tensor{known}, got {got}"
    lo, hi = (float(t.min()), float(t.max())) if t.numel() else (0.0, 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{at} holds NaN or infinite values"
    if bounds and not bounds[0] <= lo <= hi <= bounds[1]:
        return f"{at} must lie in [{bounds[0]:g}, {bounds[1]:g}], got values from {lo:.4g} to {hi:.4g}"
    return None


def _take_tensor(t: torch.Tensor, indices: Iterable[int]) -> torch.Tensor:
    import torch

    return t.index_select(0, torch.as_tensor(list(indices), dtype=torch.long, device=t.device))


def _cat(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    import torch

    return torch.cat(list(tensors), dim=0)


@dataclass
class Text(Data):
    """A batch of prompts."""

    items: list[str]
    kind: ClassVar[str] = "Text"

    def __post_init__(self) -> None:
        self.items = [self.items] if isinstance(self.items, str) else list(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def take(self, indices: Sequence[int]) -> Text:
        return Text([self.items[i] for i in indices])

    @classmethod
    def concat(cls, parts: Sequence[Any]) -> Text:
        return cls([s for p in parts for s in p.items])

    def problem(self) -> str | None:
        odd = [type(s).__name__ for s in self.items if not isinstance(s, str)]
        return f"Text.items must be strings, got {odd[0]}" if odd else None


@dataclass
class Embedding(Data):
    """Text (or speech) encoded for a generator: ``tokens`` B×L×D (one vector per token), ``mask`` B×L (1 for real
    tokens, 0 for padding), ``pooled`` B×D or None, and ``encoder``, the encoder that made it (a generator may refuse
    embeddings from an encoder it was not trained with). For classifier-free guidance an encoder may also carry each
    item's *negative* (unconditional) embedding, laid out like the positive one: ``negative_tokens`` B×L×D,
    ``negative_mask`` B×L, ``negative_pooled`` B×D, each None when absent (API 1.1; generators that do not guide
    ignore them). ``text``: the words each item encodes (the prompt, or what a spoken-prompt encoder heard), or None."""

    tokens: "torch.Tensor"
    mask: "torch.Tensor"
    encoder: str
    pooled: "torch.Tensor | None" = None
    negative_tokens: "torch.Tensor | None" = None
    negative_mask: "torch.Tensor | None" = None
    negative_pooled: "torch.Tensor | None" = None
    text: "list[str] | None" = None
    kind: ClassVar[str] = "Embedding"

    #: The optional per-item tensors, taken and joined like ``tokens``.
    OPTIONAL: ClassVar[tuple[str, ...]] = ("pooled", "negative_tokens", "negative_mask", "negative_pooled")

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def take(self, indices: Sequence[int]) -> Embedding:
        indices = list(indices)
        optional = {n: None if (v := getattr(self, n)) is None else _take_tensor(v, indices) for n in self.OPTIONAL}
        text = None if self.text is None else [self.text[i] for i in indices]
        tokens, mask = _take_tensor(self.tokens, indices), _take_tensor(self.mask, indices)
        return Embedding(tokens=tokens, mask=mask, encoder=self.encoder, text=text, **optional)

    @classmethod
    def concat(cls, parts: Sequence[Any]) -> Embedding:
        encoders = {p.encoder for p in parts}
        if len(encoders) > 1:
            raise ValueError(f"cannot join embeddings from different encoders: {sorted(encoders)}")
        values = {name: [getattr(p, name) for p in parts] for name in cls.OPTIONAL}
        # a field survives a join only when every part has it
        optional: dict[str, Any] = {n: None if any(v is None for v in vs) else _cat(vs) for n, vs in values.items()}
        texts = [p.text for p in parts]
        optional["text"] = None if any(t is None for t in texts) else [t for ts in texts for t in ts]
        return cls(
            tokens=_cat(p.tokens for p in parts), mask=_cat(p.mask for p in parts), encoder=parts[0].encoder, **optional
        )

    def problem(self) -> str | None:
        if not isinstance(self.encoder, str) or not self.encoder:
            return "Embedding.encoder must name the encoder that made it"
        sizes: dict[str, int] = {}  # negatives may have their own length N; pooled its own width P
        layouts = ("B×L×D", "B×L", "B×P", "B×N×D", "B×N", "B×P")  # tokens, mask, then OPTIONAL's
        found = [
            _tensor_problem(f"Embedding.{name}", getattr(self, name), layout, sizes, real="mask" not in name)
            for name, layout in zip(("tokens", "mask") + self.OPTIONAL, layouts)
            if getattr(self, name) is not None or name not in self.OPTIONAL
        ]
        return next((f for f in found if f), None)


@dataclass
class Latent(Data):
    """A batch of latent tensors, B×C×H×W, in a generator's own latent space."""

    tensor: "torch.Tensor"
    space: str = ""
    kind: ClassVar[str] = "Latent"

    def __len__(self) -> int:
        return int(self.tensor.shape[0])

    def take(self, indices: Sequence[int]) -> Latent:
        return Latent(_take_tensor(self.tensor, indices), self.space)

    @classmethod
    def concat(cls, parts: Sequence[Any]) -> Latent:
        return cls(_cat(p.tensor for p in parts), parts[0].space)

    def problem(self) -> str | None:
        return _tensor_problem("Latent.tensor", self.tensor, "B×C×H×W", {})


@dataclass
class Image(Data):
    """A batch of RGB images: float in [0, 1], B×C×H×W."""

    pixels: "torch.Tensor"
    kind: ClassVar[str] = "Image"

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def take(self, indices: Sequence[int]) -> Image:
        return Image(_take_tensor(self.pixels, indices))

    @classmethod
    def concat(cls, parts: Sequence[Any]) -> Image:
        return cls(_cat(p.pixels for p in parts))

    def problem(self) -> str | None:
        found = _tensor_problem("Image.pixels", self.pixels, "B×3×H×W", {}, (0.0, 1.0))
        return found or (None if self.pixels.numel() else f"Image.pixels holds no pixels: {tuple(self.pixels.shape)}")

    def to_numpy(self) -> Any:
        """B×H×W×3 uint8, rounded the same way every time (reproducible pixels), a block of rows at a time."""
        import torch

        b, _, h, w = self.pixels.shape
        out = torch.empty(b, h, w, 3, dtype=torch.uint8)
        for r in range(0, h, 256):
            block = self.pixels[:, :, r : r + 256].detach().float().clamp(0, 1).mul_(255.0).round_()
            out[:, r : r + 256] = block.permute(0, 2, 3, 1)
        return out.numpy()

    def to_pil(self) -> "list[PILImage.Image]":
        from PIL import Image as PILImage

        return [PILImage.fromarray(a) for a in self.to_numpy()]


@dataclass
class Audio(Data):
    """A batch of waveforms, float in [-1, 1], B×C×T, at ``sample_rate`` Hz. Items of different
    lengths share one tensor: ``lengths`` (plugin API 1.2) gives each item's samples (B ints; None
    when all fill T; set by components that change lengths, e.g. a silence trim), and samples past
    an item's length are zero. ``take`` cuts T to the longest item taken and ``concat`` pads with
    zeros, so an item's samples, and its length, are the same alone or in any batch."""

    waveforms: "torch.Tensor"
    sample_rate: int
    lengths: "list[int] | None" = None
    kind: ClassVar[str] = "Audio"

    def __post_init__(self) -> None:
        if self.lengths is not None:
            self.lengths, total = [int(n) for n in self.lengths], int(self.waveforms.shape[-1])
            if len(self.lengths) != len(self) or any(not 0 <= n <= total for n in self.lengths):
                why = f"one per waveform ({len(self)}), which must each lie between 0 and the {total} samples"
                raise ValueError(f"Audio.lengths {self.lengths} must be {why}")
            if self.lengths and all(n == total for n in self.lengths):
                self.lengths = None  # no item is shorter than T: the plain form

    def __len__(self) -> int:
        return int(self.waveforms.shape[0])

    def length(self, index: int) -> int:
        """Samples in item ``index`` (T unless ``lengths`` says less)."""
        return int(self.waveforms.shape[-1]) if self.lengths is None else self.lengths[index]

    def clip(self, index: int) -> "torch.Tensor":
        """Item ``index`` as a C×length tensor (its own samples, without padding)."""
        return self.waveforms[index, :, : self.length(index)]

    def take(self, indices: Sequence[int]) -> Audio:
        indices = list(indices)
        if self.lengths is None:
            return Audio(_take_tensor(self.waveforms, indices), self.sample_rate)
        lengths = [self.lengths[i] for i in indices]
        return Audio(_take_tensor(self.waveforms, indices)[..., : max(lengths, default=0)], self.sample_rate, lengths)

    @classmethod
    def concat(cls, parts: Sequence[Any]) -> Audio:
        rates = {p.sample_rate for p in parts}
        if len(rates) > 1:
            raise ValueError(f"cannot join audio at different sample rates: {sorted(rates)}")
        if all(p.lengths is None for p in parts) and len({int(p.waveforms.shape[-1]) for p in parts}) == 1:
            return cls(_cat(p.waveforms for p in parts), parts[0].sample_rate)
        import torch.nn.functional as F

        longest = max(int(p.waveforms.shape[-1]) for p in parts)
        waveforms = [F.pad(p.waveforms, (0, longest - int(p.waveforms.shape[-1]))) for p in parts]
        lengths = [p.length(i) for p in parts for i in range(len(p))]
        return cls(_cat(waveforms), parts[0].sample_rate, lengths)

    def problem(self) -> str | None:
        found = _tensor_problem("Audio.waveforms", self.waveforms, "B×C×T", {}, (-1.0, 1.0))
        if found:
            return found
        if not isinstance(self.sample_rate, int) or self.sample_rate <= 0:
            return f"Audio.sample_rate must be a positive int, got {self.sample_rate!r}"
        for i, n in enumerate(self.lengths or []):
            if self.waveforms[i, :, n:].any():
                return f"Audio item {i} holds sound past its length {n}: samples past an item's length must be zero"
        return None

    @classmethod
    def from_clips(cls, clips: Sequence[Any], sample_rate: int) -> "Audio":
        """From per-item C×T or T clips (arrays or tensors): zero-padded, with ``lengths`` if they differ."""
        import numpy as np
        import torch

        tensors = [
            (c if isinstance(c, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(c))).float() for c in clips
        ]
        tensors = [t[None] if t.ndim == 1 else t for t in tensors]
        longest = max(int(t.shape[-1]) for t in tensors)
        padded = torch.stack([torch.nn.functional.pad(t, (0, longest - int(t.shape[-1]))) for t in tensors])
        return cls(padded, int(sample_rate), [int(t.shape[-1]) for t in tensors])


#: Every data type by its ``kind`` name.
DATA_TYPES: dict[str, type[Data]] = {t.kind: t for t in (Text, Embedding, Latent, Image, Audio)}
