"""Log-mel spectrograms and back: what Loom's text-to-sound generators predict, and how their
predictions become waveforms.

A generator trained on Sounds predicts a normalised log-mel spectrogram (``n_mels`` × frames,
values in about [-1, 1]); :class:`MelCodec` turns waveforms into such spectrograms for training
and turns predicted spectrograms back into waveforms with torchaudio (``InverseMelScale``, then
``GriffinLim`` to recover a phase). The settings are a small pydantic model, so a generator can
store them in its ``config.json`` and decode exactly as it was trained::

    codec = MelCodec(MelSettings())                      # the defaults measured in docs/audio.md
    mel = codec.encode(waveforms)                        # B×T (or B×1×T) at 16 kHz → B×n_mels×frames
    again = codec.decode(mel, length=waveforms.shape[-1])   # B×T, float in [-1, 1]

``MelSettings()`` holds the settings picked in docs/audio.md (16 kHz, n_fft 1024, hop 256, 64 mel
bands, 32 Griffin-Lim iterations: a 1.5 s Sounds clip is 64×94): 200 ground-truth Sounds clips
sent through ``encode`` then ``decode`` still score 1.000 with SoundsEval (per attribute and whole
caption), so these settings cost a model predicting them nothing measurable on Sounds
(``bench/mel_round_trip.py``). Pitch comes back within a semitone with 64 bands, within a
quarter-semitone with 128. This module imports torch only inside methods.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class MelSettings(BaseModel):
    """How waveforms become log-mel spectrograms (and back).

    ``floor_db`` and ``top_db`` fix the normalisation: a mel power of ``top_db`` decibels maps to
    1, ``floor_db`` (and anything quieter) to -1, so a model's outputs have a fixed range whatever
    the clip.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_rate: int = Field(16000, ge=4000, le=192000, description="Hz; waveforms must already be at this rate")
    n_fft: int = Field(1024, ge=64, le=16384, description="STFT size (samples)")
    hop_length: int = Field(256, ge=16, le=4096, description="samples between frames")
    n_mels: int = Field(64, ge=8, le=512, description="mel bands")
    f_min: float = Field(0.0, ge=0.0)
    f_max: float | None = Field(None, description="highest mel band edge (Hz); None: sample_rate / 2")
    mel_scale: Literal["htk", "slaney"] = "htk"
    top_db: float = Field(60.0, description="mel power (dB) that maps to +1")
    floor_db: float = Field(-60.0, description="mel power (dB) that maps to -1 (quieter is clipped)")
    griffin_lim_iterations: int = Field(32, ge=1, le=1000)
    momentum: float = Field(0.99, ge=0.0, lt=1.0, description="fast Griffin-Lim momentum")

    @model_validator(mode="after")
    def _consistent(self) -> "MelSettings":
        if self.hop_length > self.n_fft:
            raise ValueError(
                f"hop_length {self.hop_length} is longer than n_fft {self.n_fft}: frames would skip samples"
            )
        if self.f_max is not None and not self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"f_max must lie in (f_min, sample_rate / 2], got {self.f_max}")
        if self.floor_db >= self.top_db:
            raise ValueError(f"floor_db {self.floor_db} must be below top_db {self.top_db}")
        return self

    def frames(self, num_samples: int) -> int:
        """Spectrogram frames for a waveform of ``num_samples`` (frames are centred, so T / hop + 1)."""
        return num_samples // self.hop_length + 1

    def samples(self, num_frames: int) -> int:
        """The waveform length that gives ``num_frames`` frames (the inverse of :meth:`frames`)."""
        return (num_frames - 1) * self.hop_length


class MelCodec:
    """Waveforms ↔ normalised log-mel spectrograms with fixed :class:`MelSettings`.

    ``encode`` takes B×T or B×1×T float waveforms at ``settings.sample_rate``; ``decode`` gives
    B×T waveforms in [-1, 1]. Both run on the device of their input. Griffin-Lim starts from a
    random phase drawn per item: pass one ``torch.Generator`` per item (``generators=``, e.g. the
    ones a component's ``run`` receives) so that an item decodes the same alone or in any batch;
    without them every item starts from seed 0, so a spectrogram always gives the same waveform.
    """

    def __init__(self, settings: "MelSettings | dict[str, Any] | None" = None):
        if settings is None:
            settings = MelSettings()
        elif isinstance(settings, dict):
            settings = MelSettings(**settings)
        self.settings = settings
        self._transforms: dict[str, Any] = {}

    def _transform(self, name: str, device):
        key = f"{name}:{device}"
        if key not in self._transforms:
            import torchaudio

            s = self.settings
            bands = dict(
                sample_rate=s.sample_rate, f_min=s.f_min, f_max=s.f_max, n_mels=s.n_mels, mel_scale=s.mel_scale
            )
            if name == "mel":
                t = torchaudio.transforms.MelSpectrogram(
                    n_fft=s.n_fft, hop_length=s.hop_length, power=2.0, center=True, **bands
                )
            else:
                t = torchaudio.transforms.InverseMelScale(n_stft=s.n_fft // 2 + 1, driver="gelsd", **bands)
            self._transforms[key] = t.to(device)
        return self._transforms[key]

    def encode(self, waveforms) -> "Any":
        """B×T or B×1×T waveforms → B×n_mels×frames log-mel spectrograms, normalised to [-1, 1]."""
        import torch

        w = _batch_of_mono(waveforms)
        s = self.settings
        mel = self._transform("mel", w.device)(w.float())
        db = 10.0 * torch.log10(mel.clamp_min(1e-20))
        return ((db - s.floor_db) / (s.top_db - s.floor_db) * 2.0 - 1.0).clamp(-1.0, 1.0)

    def mel_power(self, log_mel):
        """Normalised log-mel (as from :meth:`encode`) → mel power spectrogram."""
        s = self.settings
        db = (log_mel.float().clamp(-1.0, 1.0) + 1.0) / 2.0 * (s.top_db - s.floor_db) + s.floor_db
        power = 10.0 ** (db / 10.0)
        # the floor stands for "silence", not for a faint hiss at floor_db
        return power * (log_mel > -1.0 + 1e-4)

    def decode(self, log_mel, length: int | None = None, generators=None):
        """B×n_mels×frames normalised log-mel → B×T waveforms in [-1, 1] (``length`` samples;
        default ``settings.samples(frames)``)."""
        import torch

        if log_mel.ndim != 3 or log_mel.shape[1] != self.settings.n_mels:
            raise ValueError(
                f"expected a B×{self.settings.n_mels}×frames log-mel spectrogram, got shape {tuple(log_mel.shape)}"
            )
        if generators is not None and len(generators) != len(log_mel):
            raise ValueError(f"got {len(generators)} generators for {len(log_mel)} spectrograms: give one per item")
        if len(log_mel) > 1:
            # one item at a time: the batched inverse mel scale and stft/istft round in ways that
            # depend on the batch and the CPU (~1e-7), and Griffin-Lim's momentum grows that to
            # ~1e-3, so a clip would change with its neighbours in a batch
            return torch.cat(
                [
                    self.decode(log_mel[i : i + 1], length, None if generators is None else generators[i : i + 1])
                    for i in range(len(log_mel))
                ]
            )
        s = self.settings
        power = self.mel_power(log_mel)
        # InverseMelScale solves in float32 on the device; a least-squares solve per batch is cheap
        linear_power = self._transform("inverse", power.device)(power)
        magnitude = linear_power.clamp_min(0.0).sqrt()
        length = s.samples(log_mel.shape[-1]) if length is None else int(length)
        if generators is None:
            generators = [torch.Generator(device=magnitude.device).manual_seed(0) for _ in range(len(magnitude))]
        wave = griffin_lim(magnitude, s, length, generators)
        return wave.clamp(-1.0, 1.0)


class MelImage(BaseModel):
    """A fixed-length clip as a 1 × n_mels × ``frames`` "image" in [0, 1], what Loom's sound
    families train on and predict: the normalised log-mel of :class:`MelCodec` (in [-1, 1])
    mapped to [0, 1] (0: ``floor_db`` or quieter, 1: ``top_db``), padded with silence on the right
    from the clip's own frames (``settings.frames(samples)``) to ``frames``, so the width fits a
    decoder that doubles its seed. Saved in a sound model's ``config.json`` (``"mel"``), so that
    generation inverts exactly what training did::

        layout = MelImage(samples=24000, frames=96)        # a 1.5 s Sounds clip: 94 frames → 96
        x = layout.encode(waveforms)                       # B×T → B×1×64×96 in [0, 1]
        audio = layout.decode(x, generators)               # B×1×64×96 → B×1×24000 in [-1, 1]
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    settings: MelSettings = Field(default_factory=MelSettings)
    samples: int = Field(24000, ge=1, description="waveform length (samples) a clip is encoded from and decoded to")
    frames: int = Field(96, ge=1, description="width of the image: the clip's frames, padded with silence")

    @model_validator(mode="after")
    def _wide_enough(self) -> "MelImage":
        if self.frames < self.settings.frames(self.samples):
            raise ValueError(
                f"{self.frames} frames cannot hold a {self.samples}-sample clip, which has {self.settings.frames(self.samples)}"
            )
        return self

    @property
    def clip_frames(self) -> int:
        """Frames of the clip itself (the rest of the width is padding)."""
        return self.settings.frames(self.samples)

    def encode(self, waveforms, codec: "MelCodec | None" = None):
        """B×T (or B×1×T) waveforms at ``settings.sample_rate`` → B×1×n_mels×frames in [0, 1];
        longer clips are cut and shorter ones padded with silence to ``samples`` first."""
        import torch.nn.functional as F

        w = _batch_of_mono(waveforms)
        w = F.pad(w, (0, max(0, self.samples - w.shape[-1])))[:, : self.samples]
        mel = (codec or MelCodec(self.settings)).encode(w)
        mel = F.pad(mel, (0, self.frames - mel.shape[-1]), value=-1.0)
        return ((mel + 1.0) / 2.0)[:, None]

    def decode(self, images, generators=None, codec: "MelCodec | None" = None):
        """B×1×n_mels×frames in [0, 1] → B×1×``samples`` waveforms in [-1, 1] (the padding is
        dropped; Griffin-Lim's phase is drawn from ``generators``, one per item)."""
        n_mels = self.settings.n_mels
        if images.ndim != 4 or images.shape[1] != 1 or images.shape[2] != n_mels or images.shape[3] < self.clip_frames:
            raise ValueError(f"expected B×1×{n_mels}×{self.frames} mel images, got shape {tuple(images.shape)}")
        log_mel = images[:, 0, :, : self.clip_frames].float() * 2.0 - 1.0
        return (codec or MelCodec(self.settings)).decode(log_mel, length=self.samples, generators=generators)[:, None]


def _batch_of_mono(waveforms):
    import torch

    w = waveforms if isinstance(waveforms, torch.Tensor) else torch.as_tensor(waveforms)
    if w.ndim == 3:
        if w.shape[1] != 1:
            w = w.mean(1)
        else:
            w = w[:, 0]
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2:
        raise ValueError(f"expected B×T or B×1×T waveforms, got shape {tuple(w.shape)}")
    return w


def griffin_lim(magnitude, settings: MelSettings, length: int, generators):
    """Fast Griffin-Lim (Perraudin et al. 2013, as torchaudio's ``GriffinLim``) from a B×F×frames
    magnitude spectrogram, item *i*'s starting phase drawn from ``generators[i]`` (torchaudio's
    own draws from the global generator, which would make decoding unrepeatable). Returns
    B×``length`` waveforms."""
    import torch

    n_fft, hop = settings.n_fft, settings.hop_length
    window = torch.hann_window(n_fft, device=magnitude.device)
    phase = torch.stack([torch.rand(magnitude.shape[1:], generator=g, device=magnitude.device) for g in generators]) * (
        2 * math.pi
    )
    angles = torch.polar(torch.ones_like(magnitude), phase)
    previous = torch.zeros_like(angles)
    wave = None
    for _ in range(settings.griffin_lim_iterations):
        wave = torch.istft(magnitude * angles, n_fft=n_fft, hop_length=hop, window=window, length=length)
        rebuilt = torch.stft(wave, n_fft=n_fft, hop_length=hop, window=window, return_complex=True, pad_mode="reflect")
        angles = rebuilt - (settings.momentum / (1 + settings.momentum)) * previous
        angles = angles / angles.abs().clamp_min(1e-16)
        previous = rebuilt
    return torch.istft(magnitude * angles, n_fft=n_fft, hop_length=hop, window=window, length=length)


__all__ = ["MelCodec", "MelImage", "MelSettings", "griffin_lim"]
