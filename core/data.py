"""The data types that flow between components.

Loom keeps these few and coarse: :class:`Text`, :class:`Embedding`, :class:`Latent`,
:class:`Image`, :class:`Audio`. Each is a batch: ``len(x)`` is the number of items,
``x.take(indices)`` selects items and ``type(x).concat([...])`` joins batches, which is all
the pipeline engine needs to micro-batch any component.

Tensors are ``torch.Tensor`` but this module does not import torch, so that importing the
contract stays fast; torch is imported where a tensor is actually made.
"""

from __future__ import annotations

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
        if isinstance(self.items, str):
            self.items = [self.items]
        self.items = list(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def take(self, indices: Sequence[int]) -> Text:
        return Text([self.items[i] for i in indices])

    @classmethod
    def concat(cls, parts: Sequence[Any]) -> Text:
        return cls([s for p in parts for s in p.items])


@dataclass
class Embedding(Data):
    """Text (or speech) encoded for a generator.

    ``tokens`` is B×L×D (one vector per token), ``mask`` is B×L (1 for real tokens, 0 for
    padding), ``pooled`` is B×D or None, and ``encoder`` names the encoder that made it so a
    generator can refuse embeddings from an encoder it was not trained with.

    For classifier-free guidance an encoder may also carry each item's *negative* (unconditional)
    embedding, laid out like the positive one: ``negative_tokens`` B×L×D, ``negative_mask`` B×L
    and ``negative_pooled`` B×D, each None when absent (plugin API 1.1; older encoders leave them
    None and generators that do not guide ignore them).
    """

    tokens: "torch.Tensor"
    mask: "torch.Tensor"
    encoder: str
    pooled: "torch.Tensor | None" = None
    negative_tokens: "torch.Tensor | None" = None
    negative_mask: "torch.Tensor | None" = None
    negative_pooled: "torch.Tensor | None" = None
    kind: ClassVar[str] = "Embedding"

    #: The optional per-item tensors, taken and joined like ``tokens``.
    OPTIONAL: ClassVar[tuple[str, ...]] = ("pooled", "negative_tokens", "negative_mask", "negative_pooled")

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def take(self, indices: Sequence[int]) -> Embedding:
        indices = list(indices)
        optional: dict[str, Any] = {}
        for name in self.OPTIONAL:
            value = getattr(self, name)
            optional[name] = None if value is None else _take_tensor(value, indices)
        return Embedding(
            tokens=_take_tensor(self.tokens, indices),
            mask=_take_tensor(self.mask, indices),
            encoder=self.encoder,
            **optional,
        )

    @classmethod
    def concat(cls, parts: Sequence[Any]) -> Embedding:
        encoders = {p.encoder for p in parts}
        if len(encoders) > 1:
            raise ValueError(f"cannot join embeddings from different encoders: {sorted(encoders)}")
        optional: dict[str, Any] = {}
        for name in cls.OPTIONAL:
            values = [getattr(p, name) for p in parts]
            # a field survives a join only when every part has it
            optional[name] = None if any(v is None for v in values) else _cat(values)
        return cls(
            tokens=_cat(p.tokens for p in parts), mask=_cat(p.mask for p in parts), encoder=parts[0].encoder, **optional
        )


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

    def to_numpy(self) -> Any:
        """B×H×W×3 uint8, rounded the same way every time so saved pixels are reproducible."""
        import torch

        px = (self.pixels.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)
        return px.permute(0, 2, 3, 1).cpu().numpy()

    def to_pil(self) -> "list[PILImage.Image]":
        from PIL import Image as PILImage

        return [PILImage.fromarray(a) for a in self.to_numpy()]


@dataclass
class Audio(Data):
    """A batch of waveforms, float in [-1, 1], B×C×T, at ``sample_rate`` Hz.

    Items of different lengths share one tensor: ``lengths`` gives each item's own number of
    samples (a list of B ints; None when every item fills all T samples), and samples past an
    item's length are zero. ``take`` cuts T to the longest item taken and ``concat`` pads shorter
    batches with zeros, so an item's samples, and its length, are the same alone or in any batch.
    A component that changes lengths (a silence trim) returns ``lengths``; every other component
    may leave it None. (``lengths``: plugin API 1.2.)
    """

    waveforms: "torch.Tensor"
    sample_rate: int
    lengths: "list[int] | None" = None
    kind: ClassVar[str] = "Audio"

    def __post_init__(self) -> None:
        if self.lengths is not None:
            self.lengths = [int(n) for n in self.lengths]
            if len(self.lengths) != int(self.waveforms.shape[0]):
                raise ValueError(f"Audio.lengths holds {len(self.lengths)} lengths for {len(self)} waveforms")
            total = int(self.waveforms.shape[-1])
            if any(not 0 <= n <= total for n in self.lengths):
                raise ValueError(f"Audio.lengths {self.lengths} must each lie between 0 and the {total} samples")
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
        longest = max(lengths, default=0)
        return Audio(_take_tensor(self.waveforms, indices)[..., :longest], self.sample_rate, lengths)

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

    @classmethod
    def from_clips(cls, clips: Sequence[Any], sample_rate: int) -> "Audio":
        """From per-item clips (C×T or T arrays or tensors, lengths may differ): zero-padded to
        the longest, with ``lengths`` set when they differ."""
        import numpy as np
        import torch

        tensors = []
        for c in clips:
            t = c if isinstance(c, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(c))
            t = t.float()
            tensors.append(t[None] if t.ndim == 1 else t)
        longest = max(int(t.shape[-1]) for t in tensors)
        padded = torch.stack([torch.nn.functional.pad(t, (0, longest - int(t.shape[-1]))) for t in tensors])
        return cls(padded, int(sample_rate), [int(t.shape[-1]) for t in tensors])


#: Every data type by its ``kind`` name.
DATA_TYPES: dict[str, type[Data]] = {t.kind: t for t in (Text, Embedding, Latent, Image, Audio)}
