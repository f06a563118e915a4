"""The audio postprocessors do what they say (resample keeps pitch and duration, trim removes
leading and trailing silence, fade starts and ends at zero, loudness hits its target), work item
by item on batches of different lengths, and pass Loom's conformance kit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from loom.core import Audio, ConfigError, InputError, Postprocessor
from loom.outputs import write
from loom.plugins.audio_postprocessors import Fade, Loudness, Resample, TrimSilence, measure
from loom.testing import check_component, conformance_tests

test_audio_postprocessors_conform = conformance_tests("audio-postprocessors")


def tone(hz: float, seconds: float, rate: int, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(round(seconds * rate)), dtype=torch.float64) / rate
    return (amplitude * torch.sin(2 * torch.pi * hz * t)).float()


def peak_hz(wave: torch.Tensor, rate: int) -> float:
    x = wave.double().numpy()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=8 * len(x)))
    return float(np.fft.rfftfreq(8 * len(x), 1 / rate)[spectrum.argmax()])


def padded(*parts: torch.Tensor) -> torch.Tensor:
    return torch.cat(parts)


@pytest.mark.parametrize(("old", "new"), [(16000, 8000), (16000, 44100), (22050, 16000)])
@pytest.mark.parametrize("quality", ["fast", "best"])
def test_resample_changes_the_rate_and_keeps_pitch_and_duration(old, new, quality):
    audio = Audio(torch.stack([tone(440.0, 0.5, old), tone(1000.0, 0.5, old)])[:, None], old)
    out = Resample(rate=new, quality=quality)(audio, seed=0)
    assert out.sample_rate == new and out.waveforms.shape == (2, 1, int(math.ceil(0.5 * new)))
    for i, hz in enumerate((440.0, 1000.0)):
        assert abs(peak_hz(out.waveforms[i, 0], new) - hz) < 2.0
    assert Resample(rate=old)(audio, seed=0).waveforms.equal(audio.waveforms)


def test_resample_keeps_each_items_own_length():
    clips = [tone(300.0, 0.2, 16000)[None], tone(300.0, 0.5, 16000)[None]]
    out = Resample(rate=8000)(Audio.from_clips(clips, 16000), seed=0)
    assert out.lengths == [1600, 4000] and out.waveforms.shape[-1] == 4000
    assert float(out.waveforms[0, :, 1600:].abs().max()) == 0.0


def test_trim_removes_leading_and_trailing_silence_item_by_item():
    rate = 8000
    quiet = torch.zeros(2000)
    a = padded(quiet, tone(500.0, 0.25, rate), quiet[:500])  # 2000 + 2000 + 500
    b = padded(quiet[:300], tone(500.0, 0.5, rate), quiet)  # 300 + 4000 + 2000
    audio = Audio.from_clips([a[None], b[None]], rate)
    out = TrimSilence(keep_ms=0.0)(audio, seed=0)
    assert out.lengths is not None and abs(out.lengths[0] - 2000) <= 2 and abs(out.lengths[1] - 4000) <= 2
    for i in range(2):
        clip = out.clip(i)[0]
        assert float(clip[:3].abs().max()) > 0 or float(clip[3:6].abs().max()) > 0  # starts where the sound starts
        assert float(clip.abs().max()) == pytest.approx(0.5, abs=1e-3)
    kept = TrimSilence(keep_ms=10.0)(audio, seed=0)
    assert kept.lengths[0] == out.lengths[0] + 2 * 80
    # an item alone is trimmed exactly as inside the batch
    alone = TrimSilence(keep_ms=0.0)(audio.take([1]), seed=0)
    assert alone.waveforms.shape[-1] == out.lengths[1] and torch.equal(alone.clip(0), out.clip(1))


def test_trim_leaves_silence_and_sound_without_silence_alone():
    rate = 8000
    audio = Audio(torch.stack([torch.zeros(1, 800), tone(300.0, 0.1, rate)[None]]), rate)
    out = TrimSilence(threshold_db=-20.0)(audio, seed=0)
    assert torch.equal(out.clip(0), audio.clip(0))
    assert out.length(1) >= 790  # a sine's zero crossings at the ends are not silence worth cutting


@pytest.mark.parametrize("shape", ["linear", "exponential", "logarithmic", "quarter_sine", "half_sine"])
def test_fade_starts_and_ends_at_zero(shape):
    rate = 16000
    clips = [torch.full((2, 4000), 0.5), torch.full((2, 1000), -0.5)]
    out = Fade(fade_in_ms=20.0, fade_out_ms=30.0, shape=shape)(Audio.from_clips(clips, rate), seed=0)
    for i, n in enumerate((4000, 1000)):
        clip = out.clip(i)
        assert clip.shape[-1] == n
        assert float(clip[:, 0].abs().max()) < 1e-6 and float(clip[:, -1].abs().max()) < 1e-6
        middle = clip[:, n // 2]
        assert torch.allclose(middle, torch.full_like(middle, 0.5 if i == 0 else -0.5))
    ramp = out.clip(0)[0, :320]
    assert bool((ramp[1:] >= ramp[:-1] - 1e-7).all())  # the fade-in rises


def test_fade_longer_than_the_clip_still_reaches_zero_at_both_ends():
    out = Fade(fade_in_ms=500.0, fade_out_ms=500.0)(Audio(torch.full((1, 1, 100), 0.8), 8000), seed=0)
    assert float(out.waveforms[0, 0, 0]) == 0.0 and abs(float(out.waveforms[0, 0, -1])) < 1e-6


@pytest.mark.parametrize(("method", "target"), [("lufs", -23.0), ("lufs", -16.0), ("rms", -20.0), ("peak", -6.0)])
def test_loudness_hits_its_target(method, target):
    rate = 16000
    clips = [
        tone(440.0, 1.0, rate, amplitude=0.05)[None],
        tone(1000.0, 0.2, rate, amplitude=0.3)[None],
        torch.stack([tone(200.0, 0.6, rate, 0.1), tone(300.0, 0.6, rate, 0.02)])[0:1],
    ]
    out = Loudness(target_db=target, method=method)(Audio.from_clips(clips, rate), seed=0)
    for i in range(3):
        assert measure(out.clip(i), rate, method) == pytest.approx(target, abs=0.05), i
        assert out.length(i) == clips[i].shape[-1]


def test_loudness_stops_at_the_peak_ceiling_and_leaves_silence_alone():
    rate = 16000
    spiky = torch.zeros(1, rate)
    spiky[0, 100] = 0.5  # very quiet on average, one loud sample
    out = Loudness(target_db=-10.0, peak_ceiling_db=-1.0)(
        Audio(torch.stack([spiky, torch.zeros(1, rate)]), rate), seed=0
    )
    assert float(out.waveforms[0].abs().max()) == pytest.approx(10 ** (-1 / 20), abs=1e-6)
    assert float(out.waveforms[1].abs().max()) == 0.0


@pytest.mark.parametrize("rate", [44100, 48000])
def test_bs1770_loudness_of_a_full_scale_1khz_tone(rate):
    # BS.1770-4: a 0 dBFS 997 Hz sine in one channel reads -3.01 LUFS; the same in two channels 0.0
    mono = tone(997.0, 2.0, rate, amplitude=1.0)[None]
    assert measure(mono, rate, "lufs") == pytest.approx(-3.01, abs=0.02)
    assert measure(mono.repeat(2, 1), rate, "lufs") == pytest.approx(0.0, abs=0.02)
    assert measure(torch.zeros(1, rate), rate, "lufs") == -math.inf


def test_loudness_gating_ignores_silence_between_sounds():
    rate = 16000
    sound = tone(500.0, 1.0, rate, amplitude=0.3)
    with_gaps = torch.cat([sound, torch.zeros(2 * rate), sound])[None]
    alone = measure(sound[None], rate, "lufs")
    # blocks of pure silence are gated out (ungated, half the clip silent would read 3 dB lower);
    # blocks straddling an edge still count, as BS.1770 says
    assert alone - 1.0 < measure(with_gaps, rate, "lufs") < alone + 0.01


def test_options_are_validated_and_bad_batches_named():
    with pytest.raises(ConfigError, match="rate"):
        Resample(rate=10)
    with pytest.raises(ConfigError, match="shape"):
        Fade(shape="wobbly")
    with pytest.raises(InputError, match="trim takes Audio waveforms as a float B×C×T tensor"):
        TrimSilence()(Audio(torch.zeros(2, 100), 8000), seed=0)


def test_a_chain_of_postprocessors_writes_each_item_at_its_own_length(tmp_path):
    import soundfile

    rate = 8000
    clips = [
        padded(torch.zeros(800), tone(400.0, 0.3, rate), torch.zeros(1600))[None],
        padded(torch.zeros(100), tone(400.0, 0.1, rate), torch.zeros(100))[None],
    ]
    audio = Audio.from_clips(clips, rate)
    for step in (
        TrimSilence(keep_ms=0.0),
        Fade(fade_in_ms=5.0, fade_out_ms=5.0),
        Loudness(target_db=-20.0, method="rms"),
        Resample(rate=16000),
    ):
        audio = step(audio, seed=0)
    assert audio.sample_rate == 16000 and audio.lengths is not None
    for i in range(2):
        path = tmp_path / f"{i}.wav"
        write(audio, i, path)
        data, rate_read = soundfile.read(path)
        assert rate_read == 16000 and len(data) == audio.length(i)
    assert abs(audio.length(0) - 2 * 2400) <= 4 and abs(audio.length(1) - 2 * 800) <= 4


class LeakyTrim(Postprocessor):
    """Breaks the Audio layout: says every other item is half as long but leaves sound past that."""

    input_type = Audio
    output_type = Audio

    def run(self, inputs, generators):
        w = inputs.waveforms
        return Audio(w * 0.5, inputs.sample_rate, [w.shape[-1] // (2 - i % 2) for i in range(len(inputs))])


def test_the_kit_fails_audio_with_sound_past_an_items_length():
    report = check_component(LeakyTrim, only=["call_output"])
    assert report.status("call_output") == "failed"
    assert "samples past an item's length must be zero" in report.failures[0].message
