"""A world: procedural, captioned data that generator families train on, and a checker that
grades a generator's outputs against prompts, so quality is measured without a learned judge.

A plugin registers instances with the ``loom_register_worlds`` hook; ``loom train FAMILY --data
NAME`` trains on one and ``loom eval NAME`` grades with it (Loom's own: ``shapes``, ``sounds``).
The SDK draws the prompts, builds and runs the chains and lays out the report; a world supplies
the parts below. Nothing here, and nothing a world registers, imports torch at import time.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

#: A world's ``modality`` (the words of ``Trainer.modality``) → the data kind its checker grades.
MODALITIES = {"images": "Image", "sounds": "Audio"}


class World:
    """Subclass it, set the class attributes and implement the methods; register an instance."""

    #: What ``--data`` and ``loom eval`` take: lower-case letters, digits, ``-`` and ``_``.
    name: ClassVar[str] = ""
    #: "images" or "sounds": the families that train on it (their Trainer's ``modality``).
    modality: ClassVar[str] = "images"
    #: The checker's name in reports ("ShapesEval"), and the world's word for a prompt.
    checker: ClassVar[str] = ""
    prompt_word: ClassVar[str] = "prompt"

    def training_data(self, shape: tuple[int, int, int], pool: int | None, seed: int, progress: bool = False) -> Any:
        """The training set for a family whose samples are ``shape`` (channels, height, width):
        ``pool`` items (None: the world's default) drawn from ``seed``. It has ``captions`` (one
        str per item), ``len()``, ``images(indices, rng)`` (uint8 N×H×W×C, drawn with the numpy
        generator given), ``sample_prompts()`` (the fixed prompts of the training grid) and
        ``describe()`` (a JSON-able dict whose ``"data"`` is the world's name)."""
        raise NotImplementedError

    def parse_caption(self, text: str) -> Any:
        """What ``text`` asks for, as the checker reads it."""
        raise NotImplementedError

    def prompts(self, n: int, seed: int, split: str = "templated", combinations: str = "any") -> list[tuple[str, Any]]:
        """``n`` evaluation prompts drawn from ``seed``, each with what it was drawn from.
        ``split``: "templated" (stating every attribute, as training captions can) or
        "underspecified" (leaving some unsaid, in phrasings no model trained on);
        ``combinations``: "any", "seen", or "unseen" (only combinations no training item shows)."""
        raise NotImplementedError

    def is_unseen(self, prompt: str) -> bool:
        """Whether ``prompt`` asks for a combination no training item shows."""
        return False

    def subsets(self) -> dict[str, Callable[[Any], bool]]:
        """Named tests of one item's score; a report gives each subset's whole-prompt rate."""
        return {}

    def evaluate(
        self, pipeline: Any, prompts: list[str], seeds: list[int], batch_size: int = 32, progress: bool = True
    ) -> Any:
        """The checker's report on what ``pipeline`` makes for ``prompts`` (item i seeded
        ``seeds[i]``, ``batch_size`` items a run). The report has ``scores`` (one per prompt, each
        with ``correct``), ``prompts`` and ``to_dict()``: ``n``, ``whole_prompt``, and per
        attribute and ``whole_prompt`` its ``per_attribute`` and ``chance`` rates."""
        raise NotImplementedError

    def diversity(self, pipeline: Any, seeds: int, progress: bool = True) -> dict[str, Any]:
        """How evenly ``pipeline`` spreads what the world's prompts leave open, over ``seeds``
        seeds a prompt: ``prompts``, ``seeds``, ``per_attribute`` (attribute → 0..1, 1.0 as even
        as the world) and ``diversity`` (the least even attribute)."""
        raise NotImplementedError
