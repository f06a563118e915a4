"""A checker for Sounds clips: does a clip sound like what its prompt asks for?

A clip is mixed to mono and brought to 16 kHz. **Count**: the loudness envelope (16 ms frames)
is split into beeps where it stays above -20 dB of its loudest frame; beeps shorter than 40 ms
are dropped and gaps shorter than 40 ms joined. Each beep is then read from 64 ms spectra away
from its edges. In each spectrum the beep's frequency is found as the strongest smoothed peak
refined by a mean shift of the log-frequency centroid over ±0.6 octave, which lands on a tone's
or a buzz's fundamental and on the middle of a hiss's noise band. **Pitch**: the median
frequency over every beep, against boundaries halfway (in octaves) between the pitch centres.
**Timbre**: a buzz has power at the harmonics (2f, 3f, ...) worth at least a quarter of the
fundamental's; otherwise a hiss spreads its power over the ±0.6 octave window (spread above
0.16 octave), and a pure tone does not. **Motion**: the slope of the frequency through each beep
times its length, in octaves; the median over beeps above +0.5 is rising, below -0.5 falling.
**Diversity** (:func:`diversity`): where a prompt leaves attributes open, how evenly the values
read from its clips (one per seed) cover the world's own distribution of each open attribute.
Only numpy is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from loom.plugins.common.report import EvalReport, spec_reader, spread, summarise

from .world import COUNTS, DISTRIBUTION, MOTIONS, PITCH_HZ, PITCHES, TIMBRES, PartialSound, Sound, parse_caption

ATTRIBUTES: tuple[str, ...] = ("pitch", "timbre", "count", "motion")

#: The rate clips are analysed at (Hz); other rates are resampled to it.
ANALYSIS_RATE = 16000
_N_VALUES = {"pitch": len(PITCHES), "timbre": len(TIMBRES), "count": len(COUNTS), "motion": len(MOTIONS)}

# Loudness envelope: 16 ms frames every 4 ms.
_ENV_FRAME, _ENV_HOP = 256, 64
_ON_DB = -20.0
_MIN_BEEP_S = 0.04
_MIN_GAP_S = 0.04
# Spectra: 64 ms frames every 8 ms, read only this far inside a beep's ends.
_FRAME, _HOP = 1024, 128
_EDGE_S = 0.02
_F_LO, _F_HI = 60.0, 7000.0
_PEAK_LO, _PEAK_HI = 80.0, 3000.0
_WINDOW_OCT = 0.6
_NEAR_OCT = 1 / 12
# Decision thresholds (see the module docstring).
_BUZZ_HARMONICS = 0.25
_HISS_SPREAD = 0.16
_MOTION_OCT = 0.5
#: Pitch boundaries: halfway, in octaves, between neighbouring pitch centres.
PITCH_BOUNDS: tuple[float, ...] = tuple(math.sqrt(PITCH_HZ[a] * PITCH_HZ[b]) for a, b in zip(PITCHES, PITCHES[1:]))


@dataclass
class PromptScore:
    """Per-attribute verdicts for one clip; None where the prompt does not state the attribute.
    ``detected`` holds what was measured: the attributes as read and, per beep, its start and
    length (s), frequency (Hz), harmonic ratio, spread and glide (octaves)."""

    attributes: dict[str, bool | None]
    correct: bool
    detected: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"attributes": dict(self.attributes), "correct": self.correct, "detected": self.detected}


# -- reading clips --------------------------------------------------------------------------------


def to_mono(clip: Any, sample_rate: int) -> np.ndarray:
    """Any clip (a T or C×T array or tensor, or an :class:`loom.core.Audio` of one item) as a mono
    float64 array at :data:`ANALYSIS_RATE`."""
    if hasattr(clip, "waveforms") and hasattr(clip, "sample_rate"):  # a loom Audio batch
        if len(clip) != 1:
            raise ValueError(f"give one clip at a time, got an Audio batch of {len(clip)}")
        sample_rate = clip.sample_rate
        clip = clip.clip(0) if hasattr(clip, "clip") else clip.waveforms[0]
    if hasattr(clip, "detach"):  # a torch tensor
        clip = clip.detach().float().cpu().numpy()
    arr = np.asarray(clip, dtype=np.float64)
    if arr.ndim == 2:
        # channels first (C×T) as Loom keeps them; a T×C array from a file reader has more rows
        arr = arr.mean(0) if arr.shape[0] <= arr.shape[1] else arr.mean(1)
    if arr.ndim != 1:
        raise ValueError(f"expected a T or C×T waveform, got an array of shape {arr.shape}")
    arr = np.nan_to_num(arr)
    sample_rate = int(sample_rate)
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    if sample_rate != ANALYSIS_RATE and arr.size:
        arr = _resample(arr, sample_rate, ANALYSIS_RATE)
    return arr


def _resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited resampling through the FFT (exact for band-limited clips; numpy only)."""
    n_out = max(1, int(round(len(x) * target / rate)))
    spectrum = np.fft.rfft(x)
    keep = min(len(spectrum), n_out // 2 + 1)
    out = np.zeros(n_out // 2 + 1, dtype=complex)
    out[:keep] = spectrum[:keep]
    return np.fft.irfft(out, n_out) * (n_out / len(x))


def _segments(x: np.ndarray) -> list[tuple[float, float]]:
    """(start, end) in seconds of each beep."""
    if len(x) < _ENV_FRAME:
        return []
    # mean power in a 16 ms box around every 4th ms, from a running sum
    cumulative = np.concatenate([[0.0], np.cumsum(x * x)])
    centres = np.arange(_ENV_FRAME // 2, len(x) - _ENV_FRAME // 2 + 1, _ENV_HOP)
    energy = (cumulative[centres + _ENV_FRAME // 2] - cumulative[centres - _ENV_FRAME // 2]) / _ENV_FRAME
    peak = float(energy.max())
    if peak <= 1e-12:
        return []
    on = energy > peak * 10 ** (_ON_DB / 10)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(np.int8), [0]])))
    runs = edges.reshape(-1, 2).tolist()  # [first, past-last] frame of each run above the threshold
    step = _ENV_HOP / ANALYSIS_RATE
    offset = (_ENV_FRAME // 2) / ANALYSIS_RATE
    merged: list[list[int]] = []
    for run in runs:
        if merged and (run[0] - merged[-1][1]) * step < _MIN_GAP_S:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    return [(offset + a * step, offset + (b - 1) * step) for a, b in merged if (b - a) * step >= _MIN_BEEP_S]


class _Spectra:
    """64 ms power spectra of a clip at given times, and the frequency of each bin."""

    freqs = np.fft.rfftfreq(_FRAME, 1 / ANALYSIS_RATE)
    band = (freqs >= _F_LO) & (freqs <= _F_HI)
    log2f = np.log2(freqs[band])
    peak_range = (freqs[band] >= _PEAK_LO) & (freqs[band] <= _PEAK_HI)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_FRAME) / _FRAME)

    def __init__(self, x: np.ndarray, times: np.ndarray):
        padded = np.pad(x, _FRAME // 2)
        starts = np.clip(np.round(times * ANALYSIS_RATE).astype(int), 0, max(len(padded) - _FRAME, 0))
        frames = (
            padded[starts[:, None] + np.arange(_FRAME)[None, :]]
            if len(padded) >= _FRAME
            else np.zeros((len(times), _FRAME))
        )
        self.power = (np.abs(np.fft.rfft(frames * self.window, axis=1)) ** 2)[:, self.band]
        # cumulative power over bins, so the power between two frequencies is one subtraction
        self.cumulative = np.concatenate([np.zeros((len(self.power), 1)), np.cumsum(self.power, axis=1)], axis=1)

    def between(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Power of each frame in bins whose log2 frequency lies in [lo, hi] (one pair per frame)."""
        a = np.searchsorted(self.log2f, lo, side="left")
        b = np.searchsorted(self.log2f, hi, side="right")
        rows = np.arange(len(self.power))
        return self.cumulative[rows, b] - self.cumulative[rows, a]

    def features(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per frame: log2 frequency, spread (octaves) and harmonic ratio."""
        power, log2f = self.power, self.log2f
        smooth = self.cumulative[:, 5:] - self.cumulative[:, :-5]  # 5-bin sums; bin i+2 at column i
        peak_range = self.peak_range[2:-2]
        centre = log2f[2 + np.where(peak_range[None, :], smooth, -1.0).argmax(1)]
        for _ in range(4):  # mean shift: the centroid of the window around the current centre
            window = np.abs(log2f[None, :] - centre[:, None]) <= _WINDOW_OCT
            weight = power * window
            total = np.maximum(weight.sum(1), 1e-30)
            centre = (weight * log2f[None, :]).sum(1) / total
        spread = np.sqrt((weight * (log2f[None, :] - centre[:, None]) ** 2).sum(1) / total)
        fundamental = np.maximum(self.between(centre - _NEAR_OCT, centre + _NEAR_OCT), 1e-30)
        harmonics = np.zeros_like(centre)
        top = math.log2(_F_HI)
        for k in range(2, int(_F_HI / _PEAK_LO) + 1):
            at = centre + math.log2(k)
            if not (at <= top).any():
                break
            harmonics += np.where(at <= top, self.between(at - _NEAR_OCT, at + _NEAR_OCT), 0.0)
        return centre, spread, harmonics / fundamental


def _classify_pitch(hz: float) -> str:
    for name, bound in zip(PITCHES, PITCH_BOUNDS):
        if hz < bound:
            return name
    return PITCHES[-1]


def analyse(clip: Any, sample_rate: int = ANALYSIS_RATE) -> dict[str, Any]:
    """What a clip sounds like: ``pitch``, ``timbre``, ``count`` and ``motion`` as read (None when
    the clip holds no beep), and per beep what they were read from."""
    x = to_mono(clip, sample_rate)
    segments = _segments(x)
    if not segments:
        return {"pitch": None, "timbre": None, "count": 0, "motion": None, "beeps": []}
    step = _HOP / ANALYSIS_RATE
    beeps = []
    for start, end in segments:
        times = np.arange(math.ceil((start + _EDGE_S) / step), math.floor((end - _EDGE_S) / step) + 1) * step
        if len(times) < 3:  # a short beep: read its middle frames
            middle = round((start + end) / 2 / step)
            times = np.arange(middle - 1, middle + 2) * step
        log2f, spread, harmonic = _Spectra(x, times).features()
        slope = float(np.polyfit(times, log2f, 1)[0])
        beeps.append(
            {
                "start": round(start, 3),
                "seconds": round(end - start, 3),
                "hz": float(2 ** np.median(log2f)),
                "harmonic_ratio": float(np.median(harmonic)),
                "spread": float(np.median(spread)),
                "glide": slope * (end - start),
            }
        )
    hz = float(2 ** np.median([math.log2(b["hz"]) for b in beeps]))
    harmonic = float(np.median([b["harmonic_ratio"] for b in beeps]))
    spread = float(np.median([b["spread"] for b in beeps]))
    glide = float(np.median([b["glide"] for b in beeps]))
    if harmonic >= _BUZZ_HARMONICS:
        timbre = "buzz"
    elif spread >= _HISS_SPREAD:
        timbre = "hiss"
    else:
        timbre = "tone"
    motion = "rising" if glide > _MOTION_OCT else "falling" if glide < -_MOTION_OCT else "steady"
    rounded = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in b.items()} for b in beeps]
    return {
        "pitch": _classify_pitch(hz),
        "timbre": timbre,
        "count": len(beeps),
        "motion": motion,
        "hz": round(hz, 1),
        "beeps": rounded,
    }


_as_spec = spec_reader(parse_caption, Sound, PartialSound.from_sound, PartialSound)


def _chance(spec: PartialSound) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    whole = 1.0
    for a in ATTRIBUTES:
        if getattr(spec, a) is None:
            out[a] = None
        else:
            out[a] = 1.0 / _N_VALUES[a]
            whole *= out[a]
    out["whole_prompt"] = whole
    return out


class SoundsEval:
    """Scores clips against Sounds prompts. Stateless: build one and reuse it."""

    def evaluate(self, clip: Any, prompt: Any, sample_rate: int = ANALYSIS_RATE) -> PromptScore:
        """Score one clip (a T or C×T array or tensor at ``sample_rate``, or a one-item Audio)."""
        spec = _as_spec(prompt)
        found = analyse(clip, sample_rate)
        attributes = {a: (None if getattr(spec, a) is None else found[a] == getattr(spec, a)) for a in ATTRIBUTES}
        correct = all(v is not False for v in attributes.values())
        return PromptScore(attributes, correct, found)

    def evaluate_many(
        self, clips: Sequence[Any], prompts: Sequence[Any], sample_rate: int = ANALYSIS_RATE
    ) -> EvalReport:
        """Score each clip against its prompt. ``clips``: a list, an N×T array, or an Audio batch."""
        if hasattr(clips, "waveforms") and hasattr(clips, "sample_rate"):
            sample_rate = clips.sample_rate
            clips = [clips.take([i]) for i in range(len(clips))]
        if len(clips) != len(prompts):
            raise ValueError(f"got {len(clips)} clips for {len(prompts)} prompts")
        scores, chances = [], []
        for clip, prompt in zip(clips, prompts):
            spec = _as_spec(prompt)
            scores.append(self.evaluate(clip, spec, sample_rate))
            chances.append(_chance(spec))
        return summarise(scores, chances, ATTRIBUTES)

    def diversity(
        self, clips: Sequence[Sequence[Any]], prompts: Sequence[Any], sample_rate: int = ANALYSIS_RATE
    ) -> "DiversityReport":
        """:func:`diversity` of ``clips[i]``, the clips generated for ``prompts[i]`` (one per seed)."""
        if len(clips) != len(prompts):
            raise ValueError(f"got clips for {len(clips)} prompts, and {len(prompts)} prompts")
        return diversity([[analyse(c, sample_rate) for c in per_prompt] for per_prompt in clips], prompts)


# -- diversity ------------------------------------------------------------------------------------

#: Prompts for the diversity measure, each leaving two or three attributes open (every attribute
#: is left open by three or four of them).
DIVERSITY_PROMPTS: tuple[str, ...] = (
    "a buzz",
    "a low sound",
    "two beeps",
    "a rising hiss",
    "a high pure tone",
    "three falling beeps",
)


@dataclass
class DiversityReport:
    """How varied clips are where their prompts leave attributes open.

    ``per_prompt[i]`` maps each attribute prompt ``i`` leaves open to the :func:`spread` of the
    values detected over its clips, against the world's own distribution of that attribute
    (:data:`~loom.plugins.sounds.world.DISTRIBUTION`). ``per_attribute[a]`` is the mean over the
    prompts leaving ``a`` open (None if none does); ``overall`` the lowest of those means, so a
    generator that always picks the same pitch scores near 0 however varied the rest is.
    """

    per_attribute: dict[str, float | None]
    overall: float
    per_prompt: list[dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"overall": self.overall, "per_attribute": dict(self.per_attribute), "per_prompt": list(self.per_prompt)}


def diversity(detections: Sequence[Sequence[Any]], prompts: Sequence[Any]) -> DiversityReport:
    """The :class:`DiversityReport` of ``detections[i]``, what was detected in each clip generated
    for ``prompts[i]`` (one per seed): :func:`analyse` dicts, :class:`PromptScore` s or their
    ``detected`` dicts. ``prompts`` are captions, Sounds or PartialSounds; the attributes a
    prompt states are ignored here (:meth:`SoundsEval.evaluate_many` grades them). A value the
    world never draws (no beep, four beeps) counts as nothing found. Raises ValueError when no
    prompt leaves an attribute open."""
    if len(detections) != len(prompts):
        raise ValueError(f"got detections for {len(detections)} prompts, and {len(prompts)} prompts")
    per_prompt: list[dict[str, float]] = []
    for found, prompt in zip(detections, prompts):
        spec = _as_spec(prompt)
        found = [getattr(d, "detected", d) for d in found]
        per_prompt.append(
            {
                a: spread([d.get(a) if d.get(a) in DISTRIBUTION[a] else None for d in found], DISTRIBUTION[a])
                for a in ATTRIBUTES
                if getattr(spec, a) is None
            }
        )
    per_attribute: dict[str, float | None] = {}
    for a in ATTRIBUTES:
        values = [p[a] for p in per_prompt if a in p]
        per_attribute[a] = float(np.mean(values)) if values else None
    measured = [v for v in per_attribute.values() if v is not None]
    if not measured:
        raise ValueError("no prompt leaves an attribute open, so there is no diversity to measure")
    return DiversityReport(per_attribute, min(measured), per_prompt)


__all__ = [
    "ANALYSIS_RATE",
    "ATTRIBUTES",
    "DIVERSITY_PROMPTS",
    "DiversityReport",
    "EvalReport",
    "PITCH_BOUNDS",
    "PromptScore",
    "SoundsEval",
    "analyse",
    "diversity",
    "to_mono",
]
