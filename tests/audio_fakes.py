"""Test-only audio components (not shipped): a generator that returns ground-truth Sounds clips
for its captions, a seeded noisy-tone generator, a fake speech synthesiser and an audio encoder,
to test audio files, provenance, the CLI and mixed-modality chains without trained models."""

from __future__ import annotations

import zlib
from types import SimpleNamespace

from pydantic import Field

from loom.core import Audio, ComponentConfig, Embedding, Encoder, Generator, InputError, Registry, Text, hookimpl

#: Every setup() call, by class name: tests check that rejecting a chain loads nothing.
LOADED: list[str] = []


def _item_seed(generator) -> int:
    import torch

    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


class TruthSounds(Generator):
    """Text → Audio: the Sounds world's own rendering of each caption, jittered from the item's
    seed. What a perfect text-to-sound model would give; SoundsEval should score it ~1."""

    class Config(ComponentConfig):
        sample_rate: int = Field(16000, ge=4000, le=48000)

    input_type = Text
    output_type = Audio

    def setup(self):
        LOADED.append(type(self).__name__)

    def run(self, inputs, generators):
        import numpy as np

        from loom.plugins.sounds import parse_caption, render

        clips = []
        for text, g in zip(inputs.items, generators):
            try:
                sound = parse_caption(text).to_sound()
            except ValueError as err:
                raise InputError(f"truth-sounds: {err}") from None
            clips.append(render(sound, self.config.sample_rate, np.random.default_rng(_item_seed(g)))[None])
        return Audio.from_clips(clips, self.config.sample_rate)


class SeededTone(Generator):
    """Text → Audio: a tone whose pitch follows the prompt, plus noise drawn from the item's
    generator, so that a different seed gives different samples. ``note`` is carried into the
    provenance record only (to test large records)."""

    class Config(ComponentConfig):
        seconds: float = Field(0.25, gt=0, le=5)
        note: str = ""

    input_type = Text
    output_type = Audio

    def setup(self):
        LOADED.append(type(self).__name__)

    def run(self, inputs, generators):
        import torch

        rate = 8000
        n = int(self.config.seconds * rate)
        t = torch.arange(n) / rate
        waves = []
        for text, g in zip(inputs.items, generators):
            hz = 200 + zlib.crc32(text.encode()) % 800
            waves.append(0.5 * torch.sin(2 * torch.pi * hz * t) + 0.1 * torch.randn(n, generator=g))
        return Audio(torch.stack(waves)[:, None].clamp(-1, 1), rate)


class Speak(Generator):
    """Text → Audio: a stand-in for text-to-speech (one short tone per word)."""

    input_type = Text
    output_type = Audio

    def setup(self):
        LOADED.append(type(self).__name__)

    def run(self, inputs, generators):
        import torch

        rate = 8000
        clips = []
        for text in inputs.items:
            words = text.split() or [""]
            t = torch.arange(800) / rate
            clips.append(torch.cat([0.3 * torch.sin(2 * torch.pi * (150 + 20 * len(w)) * t) for w in words])[None])
        return Audio.from_clips(clips, rate)


class ListenEncoder(Encoder):
    """Audio → Embedding: a stand-in for a spoken-prompt encoder (energy of 8 slices of the clip)."""

    input_type = Audio
    output_type = Embedding

    def setup(self):
        LOADED.append(type(self).__name__)

    def run(self, inputs, generators):
        import torch

        rows = []
        for i in range(len(inputs)):
            clip = inputs.clip(i).mean(0)
            padded = torch.nn.functional.pad(clip, (0, -(-clip.numel() // 8) * 8 - clip.numel()))
            rows.append(padded.view(8, -1).pow(2).mean(1))
        tokens = torch.stack(rows)[:, None, :]
        return Embedding(tokens=tokens, mask=torch.ones(len(rows), 1), encoder="listen", pooled=tokens[:, 0])


def audio_plugin():
    @hookimpl
    def loom_register_components(register):
        register("truth-sounds", TruthSounds)
        register("seeded-tone", SeededTone)
        register("speak", Speak)
        register("listen", ListenEncoder)

    return SimpleNamespace(loom_register_components=loom_register_components, __name__="audiofakes")


def audio_registry(*, with_fakes: bool = True) -> Registry:
    """The audio fakes, the image fakes (tests/fakes.py), Loom's real postprocessors, its text
    encoder (for building image chains; the tests never load it) and its Sounds world."""
    import fakes

    from loom.plugins import audio_postprocessors, image_postprocessors, sounds, text_encoder

    registry = Registry()
    registry.add_plugin(audio_plugin(), "audiofakes", "audiofakes", "1.0")
    if with_fakes:
        registry.add_plugin(fakes.fake_plugin(), "fakes", "fakes-dist", "1.0")
    registry.add_plugin(audio_postprocessors, "audio-postprocessors", "loom", "0.1.0")
    registry.add_plugin(image_postprocessors, "image-postprocessors", "loom", "0.1.0")
    registry.add_plugin(text_encoder, "text-encoder", "loom", "0.1.0")  # registered, never loaded here
    registry.add_plugin(sounds, "sounds", "loom", "0.1.0")
    return registry
