"""Spoken prompts: the ``spoken-prompt`` encoder (Audio → Embedding).

It hears a spoken caption and gives the embedding the default text encoder gives the same
caption typed, so every text-conditioned generator (vae, gan, ar, ...) takes a spoken prompt
unchanged. Two stages:

1. a recogniser trained by Loom (:mod:`.model`, :mod:`.training`): 64-band log-mel at 16 kHz →
   strided convolutions → bidirectional GRU → CTC over the words of the Shapes captions;
2. the words, as a prompt, through the default text encoder (all-MiniLM-L6-v2), so that token
   states, mask and pooled vector are in that encoder's space exactly.

The recogniser knows only the Shapes captions' 37 words (and pauses, written as commas): it is a
spoken interface to the Shapes world, not general speech recognition. Other rates are resampled
to 16 kHz and channels are averaged. Weights ship in ``weights/`` (float16 safetensors, see its
TRAINING.md). The embedding's ``text`` keeps what was heard. A clip in which no Shapes words are
heard with confidence (silence, noise, a tone) is refused rather than drawn from made-up words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from loom.core import Audio, Capabilities, ComponentConfig, Embedding, Encoder, InputError, Text, hookimpl
from loom.plugins.common import DEVICES, weights_validator
from loom.plugins.common import check_folder as check_trained_folder

#: The plugin API this plugin is written for (see loom.core.hookspecs).
LOOM_PLUGIN_API = "1.4"

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights"
FAMILY = "spoken-prompt"
TRAIN = "python -m loom.plugins.spoken.training --out FOLDER"
#: Shortest clip the recogniser reads ; shorter input is refused.
MIN_SECONDS = 0.05
#: Silence added at each end of a clip before it is heard.
PAD_SECONDS = 0.2
#: Least confidence (see :func:`.model.confidence`) a clip is heard with; under it, it is refused.
#: Measured (bench in docs/audio.md): 138 prompts spoken by the ``speech`` generator, at least 0.688;
#: 76 clips of silence, noise, tones, hum, chirps and clicks, at most 0.606.
MIN_CONFIDENCE = 0.65
#: A clip whose loudest 10 ms is quieter than this RMS (-60 dBFS) is silent: nothing is heard in it
#: (measured: white noise at -80 dBFS could reach confidence 0.68 from the recogniser alone).
SILENT_LEVEL = 1e-3
#: What to say instead of something unheard.
EXAMPLE = "a large red circle in the center on a blue background"


def check_folder(folder: "str | Path") -> Path:
    """``folder`` if it holds a trained spoken-prompt recogniser; otherwise a WeightsError."""
    return check_trained_folder(folder, FAMILY, train=TRAIN)


class SpokenPrompt(Encoder):
    """Spoken caption → the default text encoder's embedding of the words heard."""

    description = "spoken prompt (audio) → text embedding, for any text-conditioned generator (Shapes words)"
    capabilities = Capabilities(
        has_weights=True, weights_option="weights", modalities=("audio", "embedding"), uses_seed=False
    )

    class Config(ComponentConfig):
        weights: str | None = Field(None, description="trained recogniser folder; None for the shipped one")
        text_model: str = Field("all-MiniLM-L6-v2", description="text encoder the words go through")
        max_length: int = Field(64, ge=4, le=512, description="tokens per prompt, as the text-encoder step")
        min_confidence: float = Field(
            MIN_CONFIDENCE, ge=0, le=1, description="under it a clip is refused as silence or noise (0: hear anything)"
        )
        device: str = Field("cpu", pattern=f"^({DEVICES})$", description="cpu, cuda, cuda:N or mps")

        _weights_are_trained = weights_validator(FAMILY, train=TRAIN)

    input_type = Audio
    output_type = Embedding
    # each clip is heard alone anyway: a padded batch would transcribe a long clip 8 times
    micro_batch = 1

    def setup(self) -> None:
        from loom.plugins.text_encoder import TextEncoder

        from .model import Recogniser

        self.recogniser = Recogniser.from_folder(
            check_folder(self.config.weights or DEFAULT_WEIGHTS), self.config.device
        )
        self.text_encoder = TextEncoder(
            model=self.config.text_model, max_length=self.config.max_length, device=self.config.device
        ).load()

    def save_weights(self, folder: "str | Path") -> Path:
        return self.recogniser.save(folder)

    def transcribe(self, audio: Audio) -> list[str]:
        """What the recogniser hears in each item, as a prompt."""
        return [text for text, _ in self.hear(audio)]

    def hear(self, audio: Audio) -> list[tuple[str, float]]:
        """What the recogniser hears in each item, as a prompt, and its confidence in it (0 to 1:
        the likeliest path's probability per word heard, see :func:`.model.confidence`)."""
        self.load()
        if not isinstance(audio, Audio):
            raise InputError(f"spoken-prompt takes Audio, got {type(audio).__name__}")
        if audio.waveforms.ndim != 3:
            raise InputError(
                f"spoken-prompt: waveforms of shape {tuple(audio.waveforms.shape)}; expected batch × channels × samples"
            )
        return [self._hear_item(audio, i) for i in range(len(audio))]

    def _hear_item(self, audio: Audio, i: int) -> tuple[str, float]:
        import torch
        import torchaudio

        from .model import SAMPLE_RATE, as_text, confidence

        clip = audio.clip(i).float()
        if clip.shape[-1] < MIN_SECONDS * audio.sample_rate:
            raise InputError(
                f"spoken-prompt: item {i} is {clip.shape[-1] / audio.sample_rate:.3f} s long; a spoken prompt "
                f"needs at least {MIN_SECONDS} s of audio"
            )
        if not torch.isfinite(clip).all():
            raise InputError(f"spoken-prompt: item {i} holds NaN or infinite samples")
        wave = clip.mean(0).to(self.config.device)
        if audio.sample_rate != SAMPLE_RATE:
            wave = torchaudio.functional.resample(wave, audio.sample_rate, SAMPLE_RATE)
        if loudest(wave) < SILENT_LEVEL:
            return "", 0.0
        # silence at both ends, as in training (Piper's clips end right at the last word, and
        # the per-band normalisation reads the quiet frames; measured: fewer misheard prompts)
        pad = int(PAD_SECONDS * SAMPLE_RATE)
        wave = torch.nn.functional.pad(wave, (pad, pad))
        # each item alone: a recurrent network's states must not see another item's padding
        with torch.inference_mode():
            scores = self.recogniser(self.recogniser.features(wave[None]))[0]
        words = self.recogniser.decode(scores)
        return as_text(words), confidence(scores, len(words))

    def run(self, inputs: Audio, generators: list) -> Embedding:
        heard = self.hear(inputs)
        for i, (text, sure) in enumerate(heard):
            if sure < self.config.min_confidence:
                number = f" {i + 1}" if len(heard) > 1 else ""
                raise InputError(
                    f"spoken prompt{number}: heard no Shapes words with confidence (silence or noise?): heard "
                    f"{text or 'nothing'!r} at confidence {sure:.2f}, under {self.config.min_confidence} — speak a "
                    f"Shapes caption, e.g. {EXAMPLE!r}"
                )
        # the text encoder keeps the words in the embedding's ``text``: what was heard
        return self.text_encoder.run(Text([text for text, _ in heard]), generators)


def loudest(wave: Any) -> float:
    """RMS of the loudest 10 ms of a 16 kHz waveform."""
    frames = wave[: wave.numel() // 160 * 160].reshape(-1, 160)
    return float(frames.pow(2).mean(1).max().sqrt()) if len(frames) else 0.0


@hookimpl
def loom_register_components(register):
    register("spoken-prompt", SpokenPrompt)
