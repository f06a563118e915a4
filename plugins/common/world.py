"""What Loom's procedural worlds (Shapes, Sounds) share: a :class:`loom.core.World` backed by a
module of plain functions, and an endless dataset whose item ``i`` depends only on its seed and
``i``. Imports no torch."""

from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar, Generic, Iterator, TypeVar

import numpy as np

from loom.core import World

Item = TypeVar("Item")


class ProceduralWorld(World):
    """A world whose ``module`` reads captions (``parse_caption(text)``) and draws evaluation
    prompts (``sample_prompts`` and ``sample_underspecified_prompts``, each taking ``n``,
    ``seed`` and ``combinations``)."""

    module: ClassVar[ModuleType]

    def parse_caption(self, text: str) -> Any:
        return self.module.parse_caption(text)

    def prompts(self, n, seed, split="templated", combinations="any"):
        sample = self.module.sample_prompts if split == "templated" else self.module.sample_underspecified_prompts
        return sample(n, seed, combinations=combinations)


class SeededDataset(Generic[Item]):
    """An endless, indexable dataset: item ``i`` depends only on ``(seed, i)``. Subclasses write
    :meth:`item` and name in ``data`` the item field that :meth:`arrays` stacks."""

    data: ClassVar[str]

    def item(self, i: int) -> Item:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Item:
        return self.item(i)

    def batch(self, start: int, count: int) -> list[Item]:
        return [self.item(i) for i in range(start, start + count)]

    def arrays(self, start: int, count: int) -> tuple[np.ndarray, list[str]]:
        """The ``data`` of items ``start .. start+count-1`` stacked, with their captions."""
        items = self.batch(start, count)
        return np.stack([getattr(it, self.data) for it in items]), [it.caption for it in items]

    def __iter__(self) -> Iterator[Item]:
        i = 0
        while True:
            yield self.item(i)
            i += 1
