"""The mel ↔ waveform helpers (loom.plugins.common.mel) that text-to-sound generators predict
through: shapes, normalisation, repeatable and batch-independent decoding, and how much of a
Sounds clip survives the round trip (bench/mel_round_trip.py measures it on 200 clips)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from loom.plugins.common.mel import MelCodec, MelSettings
from loom.plugins.sounds import SAMPLE_RATE, Sound, SoundsEval, render, sample_prompts


def tone(hz: float, seconds: float = 0.5, rate: int = SAMPLE_RATE, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    return (amplitude * torch.sin(2 * torch.pi * hz * t)).float()


def peak_hz(wave: torch.Tensor, rate: int) -> float:
    x = wave.double().numpy()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=8 * len(x)))
    return float(np.fft.rfftfreq(8 * len(x), 1 / rate)[spectrum.argmax()])


def test_settings_are_validated_and_count_frames():
    s = MelSettings()
    assert s.frames(24000) == 24000 // s.hop_length + 1 and s.samples(s.frames(24000)) <= 24000
    for bad in (
        {"hop_length": 4096, "n_fft": 1024},
        {"f_max": 9000.0},
        {"floor_db": 70.0},
        {"n_mels": 2},
        {"colour": 1},
    ):
        with pytest.raises(ValueError):
            MelSettings(**bad)
    assert MelCodec({"n_mels": 40}).settings.n_mels == 40


def test_encode_gives_normalised_log_mel_of_the_expected_shape():
    codec = MelCodec()
    s = codec.settings
    waves = torch.stack([tone(300.0), torch.zeros(8000), tone(1200.0, amplitude=0.9)])
    mel = codec.encode(waves)
    assert mel.shape == (3, s.n_mels, s.frames(8000))
    assert float(mel.min()) >= -1.0 and float(mel.max()) <= 1.0
    assert float(mel[1].max()) == -1.0  # silence sits on the floor
    assert torch.equal(codec.encode(waves[:, None]), mel)  # B×1×T is the same as B×T
    low, high = mel[0].mean(-1).argmax(), mel[2].mean(-1).argmax()
    assert low < high  # a higher tone lands in a higher mel band
    with pytest.raises(ValueError, match="B×T or B×1×T"):
        codec.encode(torch.zeros(1, 1, 1, 10))


@pytest.mark.parametrize(("n_mels", "cents"), [(64, 100), (128, 30)])
def test_decode_keeps_a_tones_pitch_and_length(n_mels, cents):
    """64 mel bands (the default) put a low tone back within a semitone (measured: up to 95 cents
    off below 500 Hz); 128 bands within a quarter of one (up to 24 cents)."""
    codec = MelCodec(MelSettings(n_mels=n_mels))
    for hz in (160.0, 300.0, 440.0, 1500.0):
        wave = tone(hz)
        again = codec.decode(codec.encode(wave[None]), length=wave.numel())
        assert again.shape == (1, wave.numel()) and float(again.abs().max()) <= 1.0
        assert abs(1200 * np.log2(peak_hz(again[0], SAMPLE_RATE) / hz)) < cents, hz
    with pytest.raises(ValueError, match=f"B×{codec.settings.n_mels}×frames"):
        codec.decode(torch.zeros(1, 7, 10))


def test_decode_is_repeatable_and_each_item_independent_of_its_batch():
    codec = MelCodec()
    waves = torch.stack([tone(300.0), tone(600.0), tone(900.0)])
    mel = codec.encode(waves)
    first = codec.decode(mel)
    assert torch.equal(first, codec.decode(mel))
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    batch = codec.decode(mel, generators=gens)
    alone = codec.decode(mel[1:2], generators=[torch.Generator().manual_seed(2)])
    assert float((batch[1] - alone[0]).abs().max()) < 1e-5
    other = codec.decode(mel[1:2], generators=[torch.Generator().manual_seed(99)])
    assert float((other[0] - alone[0]).abs().max()) > 1e-3  # the starting phase comes from the generator
    with pytest.raises(ValueError, match="one per item"):
        codec.decode(mel, generators=gens[:1])


@pytest.mark.slow
def test_ground_truth_sounds_survive_the_round_trip():
    """A small sample here; docs/audio.md has the 200-clip figure from bench/mel_round_trip.py."""
    pairs = sample_prompts(16, seed=5)
    rng = np.random.default_rng(5)
    clips = torch.from_numpy(np.stack([render(s, SAMPLE_RATE, rng) for _, s in pairs]))
    codec = MelCodec()
    again = codec.decode(codec.encode(clips), length=clips.shape[-1])
    report = SoundsEval().evaluate_many(list(again.numpy()), [s for _, s in pairs], SAMPLE_RATE)
    assert report.whole_prompt >= 0.95, report.per_attribute


def test_a_buzz_stays_a_buzz_and_a_hiss_a_hiss():
    codec = MelCodec()
    evaluator = SoundsEval()
    for timbre in ("tone", "buzz", "hiss"):
        s = Sound("low", timbre, 2, "rising")
        clip = torch.from_numpy(render(s, SAMPLE_RATE, np.random.default_rng(0)))[None]
        again = codec.decode(codec.encode(clip), length=clip.shape[-1])
        assert evaluator.evaluate(again[0].numpy(), s, SAMPLE_RATE).correct, timbre


def test_importing_the_helpers_imports_no_torch():
    code = "import sys, loom.plugins.common.mel as m; m.MelSettings(); m.MelCodec(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
