"""A trainer whose ``model`` is the :class:`.saved.SavedModel` it exports (the VAE's and the
autoregressive family's): its checkpoint is that model and its optimisers, ``--init`` loads a trained
folder of the same model, and the export is the model's own folder; and the learning-rate schedule
every first-party family uses. Imports no torch."""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

from loom.core.training import Trainer


class SavedModelTrainer(Trainer):
    """Subclasses build ``self.model`` and one attribute per name in ``optimisers``; they write
    only ``step`` and ``sample`` (and extend ``state``/``load_state`` with anything else to resume)."""

    #: The attributes holding the optimisers, each saved in a checkpoint under its own name.
    optimisers: ClassVar[tuple[str, ...]] = ("opt",)

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            **{name: getattr(self, name).state_dict() for name in self.optimisers},
        }

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        for name in self.optimisers:
            getattr(self, name).load_state_dict(state[name])

    def load_generator(self, folder: Path) -> None:
        self.model.load_state_dict(type(self.model).from_folder(folder).state_dict())

    def export(self, folder: Path, training: dict) -> None:
        self.model.save(folder, training)


def warmup_cosine(peak: float, progress: float, floor: float = 0.0) -> float:
    """The learning rate at ``progress`` (0 to 1) of a run: linear warm-up over the first 5 %, then
    cosine decay from ``peak`` down to ``floor × peak``."""
    progress = min(progress, 1.0)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return peak * min(1.0, (progress + 1e-4) / 0.05) * (floor + (1 - floor) * cosine)
