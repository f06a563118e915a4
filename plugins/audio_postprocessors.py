"""Audio postprocessors: resample, loudness normalisation, silence trim, fade.

Each takes and gives :class:`~loom.core.Audio` and works item by item on each item's own samples
(``Audio.lengths``), so an item's output is the same alone or in any batch. torch and torchaudio
are imported when a component runs, never when the plugin loads.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from loom.core import Audio, Capabilities, ComponentConfig, InputError, Postprocessor, hookimpl

#: The plugin API this plugin is written for: it returns ``Audio.lengths`` (plugin API 1.2).
LOOM_PLUGIN_API = "1.4"


def check_audio(inputs: Audio, where: str) -> None:
    """An InputError naming the component when a batch is not B×C×T floats at a positive rate."""
    w = inputs.waveforms
    if not hasattr(w, "ndim") or w.ndim != 3 or not w.is_floating_point():
        shape = tuple(getattr(w, "shape", ()))
        raise InputError(f"{where} takes Audio waveforms as a float B×C×T tensor, got shape {shape}")
    if not isinstance(inputs.sample_rate, int) or inputs.sample_rate <= 0:
        raise InputError(f"{where} needs a positive integer sample rate, got {inputs.sample_rate!r}")


def _rebuild(clips: list, sample_rate: int) -> Audio:
    """Per-item C×L clips → one batch, zero-padded to the longest, with lengths where they differ."""
    return Audio.from_clips(clips, sample_rate)


class Resample(Postprocessor):
    """Changes the sample rate (torchaudio's windowed-sinc ``resample``); pitch and duration stay."""

    description = "audio → audio at another sample rate (windowed sinc)"
    capabilities = Capabilities(uses_seed=False)

    class Config(ComponentConfig):
        rate: int = Field(16000, ge=1000, le=192000, description="target sample rate (Hz)")
        quality: Literal["fast", "best"] = Field(
            "best", description="fast: torchaudio's default sinc (width 6); best: Kaiser window, width 64"
        )

    input_type = Audio
    output_type = Audio
    micro_batch = 1  # each item is worked on alone anyway; padded copies of long clips would cost memory

    def run(self, inputs: Audio, generators: list) -> Audio:
        import torchaudio.functional as AF

        check_audio(inputs, "resample")
        old, new = inputs.sample_rate, self.config.rate
        if old == new:
            return inputs
        options = {}
        if self.config.quality == "best":
            options = {
                "lowpass_filter_width": 64,
                "rolloff": 0.9475937167399596,
                "resampling_method": "sinc_interp_kaiser",
                "beta": 14.769656459379492,
            }
        g = math.gcd(old, new)
        clips = []
        for i in range(len(inputs)):
            clip = inputs.clip(i)
            out = AF.resample(clip, old, new, **options)
            # a resampled item lasts as long as before: ceil(L * new / old) samples
            clips.append(out[..., : -(-clip.shape[-1] * (new // g) // (old // g))].clamp(-1.0, 1.0))
        return _rebuild(clips, new)


class Loudness(Postprocessor):
    """Scales each item to a target loudness: integrated loudness in LUFS (ITU-R BS.1770-4, gated
    over 400 ms blocks; an item shorter than one block is measured as one block), RMS or peak in
    dBFS. The gain never pushes the peak over ``peak_ceiling_db``: a loud target on a spiky clip
    stops at the ceiling. A silent item is left as it is."""

    description = "audio → audio at a target loudness (LUFS, RMS or peak)"
    capabilities = Capabilities(uses_seed=False)

    class Config(ComponentConfig):
        target_db: float = Field(-23.0, ge=-70.0, le=0.0, description="LUFS for 'lufs', dBFS for 'rms' and 'peak'")
        method: Literal["lufs", "rms", "peak"] = "lufs"
        peak_ceiling_db: float = Field(-1.0, ge=-60.0, le=0.0, description="highest peak the gain may reach (dBFS)")

    input_type = Audio
    output_type = Audio
    micro_batch = 1  # each item is worked on alone anyway; padded copies of long clips would cost memory

    def run(self, inputs: Audio, generators: list) -> Audio:
        check_audio(inputs, "loudness")
        ceiling = 10.0 ** (self.config.peak_ceiling_db / 20.0)
        clips = []
        for i in range(len(inputs)):
            clip = inputs.clip(i)
            level = measure(clip, inputs.sample_rate, self.config.method)
            peak = float(clip.abs().max()) if clip.numel() else 0.0
            if not math.isfinite(level) or peak <= 0.0:
                clips.append(clip)
                continue
            gain = min(10.0 ** ((self.config.target_db - level) / 20.0), ceiling / peak)
            clips.append((clip * gain).clamp(-1.0, 1.0))
        return _rebuild(clips, inputs.sample_rate)


def measure(clip, sample_rate: int, method: str = "lufs") -> float:
    """Loudness of one C×L clip: ``lufs`` (BS.1770-4 integrated loudness, LUFS), ``rms`` or
    ``peak`` (dBFS); -inf for silence."""
    if clip.numel() == 0:
        return -math.inf
    if method == "peak":
        peak = float(clip.abs().max())
        return 20.0 * math.log10(peak) if peak > 0 else -math.inf
    if method == "rms":
        rms = float(clip.double().pow(2).mean().sqrt())
        return 20.0 * math.log10(rms) if rms > 0 else -math.inf
    return integrated_loudness(clip, sample_rate)


def _k_weighting(rate: int) -> list[tuple[list[float], list[float]]]:
    """BS.1770's K-weighting (high shelf, then high pass) as two biquads (b, a) at ``rate``, from
    the analogue prototype fitted to the standard's 48 kHz coefficients (libebur128's derivation;
    at 48 kHz it gives the published coefficients). torchaudio's own ``loudness`` builds the shelf
    from rounded parameters and reads a 0 dBFS 1 kHz sine 0.27 dB low."""
    f0, gain, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / rate)
    vh = 10.0 ** (gain / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf = (
        [(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0],
        [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0],
    )
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / rate)
    a0 = 1.0 + k / q + k * k
    high_pass = ([1.0, -2.0, 1.0], [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    return [shelf, high_pass]


def integrated_loudness(clip, sample_rate: int) -> float:
    """BS.1770-4 integrated loudness (LUFS) of a C×L clip: K-weighted, 400 ms blocks overlapping
    by 75%, gated at -70 LUFS and then 10 LU below the gated mean. A clip shorter than one block
    is measured as one block. Channels beyond the fifth weigh 1."""
    import torch
    import torchaudio.functional as AF

    x = clip.double()
    for b, a in _k_weighting(sample_rate):
        x = AF.lfilter(x, torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), clamp=False)
    block = int(round(0.4 * sample_rate))
    if x.shape[-1] < block:
        energy = x.pow(2).mean(-1, keepdim=True)  # C×1
    else:
        energy = x.pow(2).unfold(-1, block, max(1, block // 4)).mean(-1)  # C×blocks
    weights = torch.ones(x.shape[0], dtype=torch.float64)
    weights[3:5] = 1.41  # surround channels, as BS.1770 weighs them
    per_block = (weights[:, None] * energy).sum(0)
    with torch.no_grad():
        loudness = -0.691 + 10.0 * torch.log10(per_block.clamp_min(1e-30))
        kept = loudness > -70.0
        if not bool(kept.any()):
            return -math.inf
        relative = -0.691 + 10.0 * math.log10(float(per_block[kept].mean())) - 10.0
        kept &= loudness > relative
        return -0.691 + 10.0 * math.log10(float(per_block[kept].mean()))


class TrimSilence(Postprocessor):
    """Removes leading and trailing silence: everything before the first and after the last
    sample louder than ``threshold_db`` below the item's peak, keeping ``keep_ms`` on each side.
    Items get shorter by different amounts (``Audio.lengths``). An item with no sound is left as
    it is."""

    description = "audio → audio without leading and trailing silence"
    capabilities = Capabilities(uses_seed=False)

    class Config(ComponentConfig):
        threshold_db: float = Field(
            -40.0, ge=-120.0, le=-1.0, description="silence: this far (at least 1 dB) below the item's peak (dB)"
        )
        keep_ms: float = Field(5.0, ge=0.0, le=10000.0, description="silence kept before and after the sound (ms)")

    input_type = Audio
    output_type = Audio
    micro_batch = 1  # each item is worked on alone anyway; padded copies of long clips would cost memory

    def run(self, inputs: Audio, generators: list) -> Audio:
        import torch

        check_audio(inputs, "trim")
        keep = int(round(self.config.keep_ms * inputs.sample_rate / 1000.0))
        clips = []
        for i in range(len(inputs)):
            clip = inputs.clip(i)
            level = clip.abs().amax(0) if clip.numel() else clip.new_zeros(0)
            peak = float(level.max()) if level.numel() else 0.0
            if peak <= 0.0:
                clips.append(clip)
                continue
            loud = torch.nonzero(level > peak * 10.0 ** (self.config.threshold_db / 20.0)).flatten()
            first, last = int(loud[0]), int(loud[-1])
            clips.append(clip[:, max(0, first - keep) : min(clip.shape[-1], last + 1 + keep)])
        return _rebuild(clips, inputs.sample_rate)


class Fade(Postprocessor):
    """Fades each item in from zero and out to zero (torchaudio's ``Fade`` shapes): its first
    and last samples become 0. A fade longer than the item is cut to the item's length."""

    description = "audio → audio faded in and out"
    capabilities = Capabilities(uses_seed=False)

    class Config(ComponentConfig):
        fade_in_ms: float = Field(10.0, ge=0.0, le=60000.0)
        fade_out_ms: float = Field(10.0, ge=0.0, le=60000.0)
        shape: Literal["linear", "exponential", "logarithmic", "quarter_sine", "half_sine"] = "linear"

    input_type = Audio
    output_type = Audio
    micro_batch = 1  # each item is worked on alone anyway; padded copies of long clips would cost memory

    def run(self, inputs: Audio, generators: list) -> Audio:
        import torchaudio.transforms as AT

        check_audio(inputs, "fade")
        rate = inputs.sample_rate
        clips = []
        for i in range(len(inputs)):
            clip = inputs.clip(i)
            n = clip.shape[-1]
            fade_in = min(n, int(round(self.config.fade_in_ms * rate / 1000.0)))
            fade_out = min(n, int(round(self.config.fade_out_ms * rate / 1000.0)))
            # a one-sample fade would be a ramp of just [0] or [1]: start (or end) at zero at least
            if self.config.fade_in_ms > 0:
                fade_in = max(fade_in, min(n, 2))
            if self.config.fade_out_ms > 0:
                fade_out = max(fade_out, min(n, 2))
            clips.append(AT.Fade(fade_in, fade_out, self.config.shape)(clip))
        return _rebuild(clips, inputs.sample_rate)


@hookimpl
def loom_register_components(register):
    register("resample", Resample)
    register("loudness", Loudness)
    register("trim", TrimSilence)
    register("fade", Fade)
