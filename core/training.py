"""The training contract: what a generator family implements so that ``loom train`` can train it.

A family supplies its model and its optimisation step as a :class:`Trainer` subclass and names it
on its generator component (``trainer = "my_plugin.training:MyTrainer"``, imported only by
``loom train``); the SDK's one workflow does the rest (data, caption encoding, checkpoints, resume,
samples: ``loom.training``, docs/training.md). Nothing here imports torch at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from .component import ComponentConfig
from .errors import InputError


@dataclass
class TrainingBatch:
    """One step's data: images and the embeddings of their captions (all torch tensors).

    - ``images``: B×C×H×W float in [0, 1], of the trainer's :meth:`Trainer.shape` (for sounds:
      B×1×mels×frames normalised log-mel spectrograms, see ``loom.plugins.common.mel.MelImage``)
    - ``tokens``: B×L×D token states of the caption encoder, ``mask``: B×L (1 = real token)
    - ``pooled``: B×D sentence embeddings
    - ``captions``: the caption strings
    """

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
    """Base of a generator family's training. Subclass it, set the class attributes, implement
    the methods. The workflow calls ``__init__`` once (fresh or before ``load_state``), then
    ``step`` once per training step.

    Determinism: draw every random number from ``self.generator`` (a seeded ``torch.Generator``,
    saved and restored with checkpoints), so that a run interrupted and resumed ends with the same
    weights as one that was not.
    """

    #: The generator component this family trains (its registered name; written as "family").
    family: ClassVar[str] = ""
    #: Side of the square images the family trains on and generates.
    image_size: ClassVar[int] = 64
    #: (channels, height, width) of one sample when it is not a square RGB image of ``image_size``
    #: (a sound family: 1 × mels × frames); read it through :meth:`shape`.
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
        """Build the model(s) and optimiser(s) (after ``torch.manual_seed(seed)``, so weight
        initialisation is seeded); ``generator`` is the seeded torch.Generator to draw from."""
        self.options = options
        self.generator = generator

    def step(self, batch: TrainingBatch, progress: float) -> dict[str, float]:
        """One optimisation step on ``batch``. ``progress`` is how far the run is, from 0 to 1
        (by steps, or by time with ``--minutes``): base learning-rate schedules on it. Returns the
        losses to show; the first entry is the one the loss curve and summary use."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """Everything resuming needs: models, optimisers, schedules, as nested dicts and lists of
        tensors and plain numbers (``model.state_dict()``, ``optimizer.state_dict()`` fit)."""
        raise NotImplementedError

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        raise NotImplementedError

    def load_generator(self, folder: Path) -> None:
        """Load the weights of a trained generator folder (what :meth:`export` wrote, without a
        checkpoint: a shipped default, or a folder copied without ``checkpoint/``) for ``--init``;
        optimisers start fresh. Raise ``ValueError`` or ``RuntimeError`` when its architecture does
        not fit these options. Optional: by default ``--init`` needs a run's checkpoint."""
        raise InputError(
            f"the {self.family!r} family starts a run only from a run's checkpoint; "
            f"{str(folder)!r} holds a trained generator without one ({folder}/checkpoint)"
        )

    def check_init(self) -> None:
        """Called after :meth:`load_state` when a new run starts from another run's checkpoint
        (``--init``), before anything is written: raise :class:`~loom.core.InputError`, saying
        what to change, when this family cannot go on from that state with these options.
        Optional: by default any state that loads is a valid start."""

    def origins(self) -> dict[str, dict[str, Any]]:
        """Records of where parts of this run's starting weights came from other than ``--init``
        (a diffusion run's ``unet_from``), each under a key ending in ``_from``. The workflow puts
        them in the training record and the checkpoint, and a later run started from this one
        keeps them in its ``init_from``. Optional: by default there are none."""
        return {}

    def export(self, folder: Path, training: dict[str, Any]) -> None:
        """Write the generator into ``folder``: ``config.json`` (with ``"family"`` and the
        ``training`` record) and ``model.safetensors``. Write each file atomically."""
        raise NotImplementedError

    def sample(self, tokens: Any, mask: Any, pooled: Any, generators: list[Any]) -> Any:
        """Samples (B×C×H×W in [0, 1], of :meth:`shape`) for the given caption embeddings, one
        torch.Generator per item."""
        raise NotImplementedError
