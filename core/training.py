"""The training contract: a generator family's :class:`Trainer` subclass (its model and optimisation step), named on
its generator (``trainer = "my_plugin.training:MyTrainer"``, imported only by ``loom train``). The SDK's workflow does
the rest (``loom.training``, docs/training.md). No torch at import."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from .component import ComponentConfig
from .errors import InputError


@dataclass
class TrainingBatch:
    """One step's data (torch tensors): ``images`` B×C×H×W float in [0, 1] of :meth:`Trainer.shape`
    (sounds: B×1×mels×frames log-mel, see ``loom.plugins.common.mel.MelImage``); the caption
    encoder's ``tokens`` B×L×D, ``mask`` B×L (1 = real token) and ``pooled`` B×D; the ``captions``."""

    images: Any
    tokens: Any
    mask: Any
    pooled: Any
    captions: list[str]


class TrainerOptions(ComponentConfig):
    """Options every family accepts; a family's ``Options`` subclasses this with its own."""

    batch_size: int = Field(64, ge=1, description="images per step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")


class Trainer:
    """Base of a family's training: set the class attributes, implement the methods. The workflow calls ``__init__``
    once (fresh or before ``load_state``), then ``step`` once per step. Draw every random number from ``self.generator``
    (seeded, saved with checkpoints): a run interrupted and resumed ends with the weights of one that was not."""

    #: The generator component this family trains (its registered name; written as "family").
    family: ClassVar[str] = ""
    #: Side of the square images the family trains on and generates.
    image_size: ClassVar[int] = 64
    #: (channels, height, width) of a sample that is not an RGB square (sounds: 1 × mels × frames).
    sample_shape: ClassVar[tuple[int, int, int] | None] = None
    #: What the family trains on: "images" (``--data shapes`` or a folder) or "sounds" (``--data sounds``).
    modality: ClassVar[str] = "images"
    Options: ClassVar[type[TrainerOptions]] = TrainerOptions

    @classmethod
    def shape(cls) -> tuple[int, int, int]:
        """(channels, height, width) of the samples the family trains on and generates."""
        if cls.sample_shape is not None:
            return tuple(int(n) for n in cls.sample_shape)  # type: ignore[return-value]
        return 3, cls.image_size, cls.image_size

    def __init__(self, options: TrainerOptions, generator: Any) -> None:
        """Build the models and optimisers (after ``torch.manual_seed(seed)``); draw from ``generator``."""
        self.options = options
        self.generator = generator

    def step(self, batch: TrainingBatch, progress: float) -> dict[str, float]:
        """One optimisation step; ``progress``: how far the run is, 0 to 1. Returns the losses (first: plotted)."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """Everything resuming needs, as nested dicts and lists of tensors and numbers (state_dicts fit)."""
        raise NotImplementedError

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        raise NotImplementedError

    def load_generator(self, folder: Path) -> None:
        """For ``--init``: load a trained folder without a checkpoint (what :meth:`export` wrote); optimisers
        start fresh. Raise ``ValueError``/``RuntimeError`` when it does not fit these options. Optional."""
        raise InputError(
            f"the {self.family!r} family starts a run only from a run's checkpoint; "
            f"{str(folder)!r} holds a trained generator without one ({folder}/checkpoint)"
        )

    def check_init(self) -> None:
        """After :meth:`load_state` when a run starts from another run's checkpoint (``--init``), before anything is
        written: raise :class:`~loom.core.InputError` saying what to change if these options cannot go on. Optional."""

    def origins(self) -> dict[str, dict[str, Any]]:
        """Where parts of the starting weights came from other than ``--init`` (a diffusion run's ``unet_from``), each
        under a key ending in ``_from``, kept in the training record, the checkpoint and a later run's ``init_from``."""
        return {}

    def export(self, folder: Path, training: dict[str, Any]) -> None:
        """Write ``config.json`` (``"family"``, ``training``) and ``model.safetensors`` atomically in ``folder``."""
        raise NotImplementedError

    def sample(self, tokens: Any, mask: Any, pooled: Any, generators: list[Any]) -> Any:
        """Samples (B×C×H×W in [0, 1], of :meth:`shape`) for the caption embeddings, one generator per item."""
        raise NotImplementedError
