"""A world: procedural, captioned training data and a checker that grades outputs against prompts (no learned judge).
Registered with ``loom_register_worlds``; ``loom train FAMILY --data NAME`` trains on one, ``loom eval NAME`` grades
with it. The SDK runs the chains and lays out the report; a world supplies the parts below (no torch at import)."""

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
        """``pool`` items (None: the default) drawn from ``seed`` for samples of ``shape`` (C, H, W),
        with ``captions``, ``len()``, ``images(indices, rng)`` (uint8 N×H×W×C, drawn with numpy
        ``rng``), ``sample_prompts()`` (the training grid's) and ``describe()`` (JSON, ``"data"``: the name)."""
        raise NotImplementedError

    def parse_caption(self, text: str) -> Any:
        """What ``text`` asks for, as the checker reads it."""
        raise NotImplementedError

    def prompts(self, n: int, seed: int, split: str = "templated", combinations: str = "any") -> list[tuple[str, Any]]:
        """``n`` prompts drawn from ``seed``, each with what it was drawn from. ``split``: "templated" (all stated) or
        "underspecified" (some unsaid); ``combinations``: "any", "seen" or "unseen" (no training item shows it)."""
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
        """The checker's report on ``pipeline``'s outputs for ``prompts`` (item i seeded ``seeds[i]``, ``batch_size`` a
        run): ``scores`` (one per prompt, with ``correct``), ``prompts``, ``to_dict()`` (``n``, ``whole_prompt``,
        ``per_attribute`` and ``chance`` rates)."""
        raise NotImplementedError

    def diversity(self, pipeline: Any, seeds: int, progress: bool = True) -> dict[str, Any]:
        """How evenly ``pipeline`` spreads what prompts leave open, over ``seeds`` seeds a prompt:
        ``prompts``, ``seeds``, ``per_attribute`` (0..1, 1.0 as even as the world), ``diversity`` (the least)."""
        raise NotImplementedError
