"""The Sounds world: sounds, captions, a caption parser, a renderer and a dataset.

A sound is one to three beeps of the same kind in a short clip: a **pitch** (low, medium, high:
centres an octave apart), a **timbre** (a pure sine tone, a buzz rich in harmonics, or a hiss of
band-limited noise), a **count** of beeps and a **motion** (the pitch of every beep holds steady,
rises or falls). Everything random is drawn from a ``numpy.random.Generator``, so a dataset item
depends only on ``(seed, index)``. Only numpy is needed.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Sequence

import numpy as np

#: Sample rate of rendered clips unless told otherwise (Hz).
SAMPLE_RATE = 16000
#: Length of every clip (seconds).
DURATION = 1.5

PITCHES: tuple[str, ...] = ("low", "medium", "high")
TIMBRES: tuple[str, ...] = ("tone", "buzz", "hiss")
COUNTS: tuple[int, ...] = (1, 2, 3)
MOTIONS: tuple[str, ...] = ("steady", "rising", "falling")

#: Centre frequency of each pitch (Hz), an octave apart; a beep's centre is the geometric mean of
#: the frequencies it passes through.
PITCH_HZ: dict[str, float] = {"low": 250.0, "medium": 500.0, "high": 1000.0}
#: How far (octaves) a rendered centre may stray from its pitch's centre, either way.
PITCH_JITTER = 1 / 6
#: How far (octaves) a rising or falling beep moves from start to end, through its centre.
GLIDE = 1.0
#: Width (octaves) of a hiss's noise band, around the beep's current frequency.
HISS_BAND = 1.0
#: Harmonics of a buzz stop below this frequency (Hz; and below 40% of the sample rate).
BUZZ_LIMIT = 6000.0
#: Beep length, gap between beeps, attack/release ramp and peak amplitude: drawn uniformly.
BEEP_SECONDS = (0.22, 0.36)
GAP_SECONDS = (0.12, 0.18)
RAMP_SECONDS = 0.01
AMPLITUDE = (0.3, 0.9)
#: Silence kept at both ends of a clip (seconds).
MARGIN_SECONDS = 0.03


# --------------------------------------------------------------------------------------------
# Sounds
# --------------------------------------------------------------------------------------------


def _check(what: str, value: Any, allowed: Sequence) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(map(str, allowed))}")


@dataclass(frozen=True)
class Sound:
    """What a clip holds: ``count`` beeps of one ``pitch``, ``timbre`` and ``motion``."""

    pitch: str
    timbre: str
    count: int
    motion: str

    def __post_init__(self) -> None:
        _check("pitch", self.pitch, PITCHES)
        _check("timbre", self.timbre, TIMBRES)
        _check("count", self.count, COUNTS)
        _check("motion", self.motion, MOTIONS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Sound":
        return cls(d["pitch"], d["timbre"], int(d["count"]), d["motion"])


def sample_sound(rng: np.random.Generator) -> Sound:
    """A random sound, every attribute uniform over its values."""
    return Sound(
        pitch=PITCHES[rng.integers(len(PITCHES))],
        timbre=TIMBRES[rng.integers(len(TIMBRES))],
        count=COUNTS[rng.integers(len(COUNTS))],
        motion=MOTIONS[rng.integers(len(MOTIONS))],
    )


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------

#: Adjectives for each pitch ("a deep buzz") and the bare name ("at a low pitch").
PITCH_WORDS: dict[str, tuple[str, ...]] = {
    "low": ("low", "low-pitched", "deep"),
    "medium": ("medium", "mid-pitched", "medium-pitched"),
    "high": ("high", "high-pitched", "shrill"),
}
#: (singular, plural) nouns for each timbre.
TIMBRE_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "tone": (("pure tone", "pure tones"), ("sine tone", "sine tones"), ("clean whistle", "clean whistles")),
    "buzz": (("buzz", "buzzes"), ("buzzer", "buzzers"), ("buzzing tone", "buzzing tones")),
    "hiss": (("hiss", "hisses"), ("noise burst", "noise bursts"), ("hissing noise", "hissing noises")),
}
#: "two buzzes", "a pair of buzzes" (the count as a determiner).
COUNT_DETERMINERS: dict[int, tuple[str, ...]] = {1: ("one", "a single"), 2: ("two", "a pair of"), 3: ("three", "three")}
#: "beeping twice".
COUNT_TIMES: dict[int, tuple[str, ...]] = {1: ("once",), 2: ("twice", "two times"), 3: ("three times", "thrice")}
#: "3 beeps", "three beeps".
COUNT_BEEPS: dict[int, tuple[str, ...]] = {1: ("1 beep", "one beep"), 2: ("2 beeps", "two beeps"), 3: ("3 beeps", "three beeps")}
MOTION_ADJECTIVES: dict[str, tuple[str, ...]] = {
    "steady": ("steady", "flat", "level"),
    "rising": ("rising", "upward", "ascending"),
    "falling": ("falling", "downward", "descending"),
}
MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "steady": ("at a steady pitch", "holding its pitch", "at a constant pitch"),
    "rising": ("rising in pitch", "sweeping up", "gliding upward"),
    "falling": ("falling in pitch", "sweeping down", "gliding downward"),
}

# {det} count determiner, {pitch} adjective, {pitch_name} bare pitch, {motion} adjective,
# {motion_phrase}, {noun} singular or plural by count, {noun1} singular, {times}, {beeps}.
TEMPLATES: tuple[str, ...] = (
    "{det} {pitch} {motion} {noun}",
    "a {pitch} {noun1} beeping {times}, {motion_phrase}",
    "{beeps} of {pitch} {noun1}, {motion_phrase}",
    "{noun1}, {pitch_name} pitch, {beeps}, {motion}",
    "{det} {noun} at a {pitch_name} pitch, {motion_phrase}",
)


def caption_with_template(sound: Sound, rng: np.random.Generator, template: int | None = None) -> tuple[str, int]:
    """Like :func:`caption`, also returning the index of the template used."""
    t = int(rng.integers(len(TEMPLATES))) if template is None else int(template)
    if not 0 <= t < len(TEMPLATES):
        raise ValueError(f"template must be in [0, {len(TEMPLATES)}), got {template}")

    def pick(options):
        return options[int(rng.integers(len(options)))]

    singular, plural = pick(TIMBRE_WORDS[sound.timbre])
    fields = {
        "det": pick(COUNT_DETERMINERS[sound.count]),
        "pitch": pick(PITCH_WORDS[sound.pitch]),
        "pitch_name": sound.pitch,
        "motion": pick(MOTION_ADJECTIVES[sound.motion]),
        "motion_phrase": pick(MOTION_PHRASES[sound.motion]),
        "noun": singular if sound.count == 1 else plural,
        "noun1": singular,
        "times": pick(COUNT_TIMES[sound.count]),
        "beeps": pick(COUNT_BEEPS[sound.count]),
    }
    return TEMPLATES[t].format(**fields), t


def caption(sound: Sound, rng: np.random.Generator, template: int | None = None) -> str:
    """A lowercase caption stating the sound's pitch, timbre, count and motion."""
    return caption_with_template(sound, rng, template)[0]


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartialSound:
    """What a prompt asks for; any attribute the text does not state is None."""

    pitch: str | None = None
    timbre: str | None = None
    count: int | None = None
    motion: str | None = None

    @classmethod
    def from_sound(cls, s: Sound) -> "PartialSound":
        return cls(s.pitch, s.timbre, s.count, s.motion)

    @property
    def complete(self) -> bool:
        return None not in (self.pitch, self.timbre, self.count, self.motion)

    def to_sound(self) -> Sound:
        if not self.complete:
            missing = [k for k, v in asdict(self).items() if v is None]
            raise ValueError(f"the prompt does not state the sound's {', '.join(missing)}")
        return Sound(self.pitch, self.timbre, self.count, self.motion)


_PITCH_WORDS = {"low": "low", "deep": "low", "medium": "medium", "mid": "medium", "middle": "medium",
                "high": "high", "shrill": "high"}
# In order of precedence: "buzzing tone" is a buzz, "hissing tone" a hiss.
_TIMBRE_WORDS = (
    ("buzz", ("buzz", "buzzes", "buzzer", "buzzers", "buzzing", "buzzy")),
    ("hiss", ("hiss", "hisses", "hissing", "hissy", "noise", "noises", "noisy")),
    ("tone", ("tone", "tones", "sine", "pure", "whistle", "whistles")),
)
_COUNT_WORDS = {"1": 1, "one": 1, "single": 1, "once": 1, "2": 2, "two": 2, "twice": 2, "pair": 2, "double": 2,
                "3": 3, "three": 3, "thrice": 3, "triple": 3}
_MOTION_WORDS = {
    "steady": "steady", "flat": "steady", "level": "steady", "constant": "steady", "holding": "steady",
    "rising": "rising", "rises": "rising", "up": "rising", "upward": "rising", "upwards": "rising", "ascending": "rising",
    "falling": "falling", "falls": "falling", "down": "falling", "downward": "falling", "downwards": "falling",
    "descending": "falling",
}  # fmt: skip
_WORD_RE = re.compile(r"[a-z0-9]+")

EXAMPLE_CAPTION = "two low rising buzzes"


def parse_caption(text: str) -> PartialSound:
    """Read a caption (or similar free text) into a :class:`PartialSound`.

    The first pitch, count and motion word count; for the timbre a buzz word beats a hiss word,
    which beats a tone word, so "a buzzing tone" is a buzz ("beep" names no timbre). Raises
    ValueError when the text names no attribute at all.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_caption expects a string, got {type(text).__name__}")
    words = _WORD_RE.findall(text.lower())
    pitch = next((_PITCH_WORDS[w] for w in words if w in _PITCH_WORDS), None)
    count = next((_COUNT_WORDS[w] for w in words if w in _COUNT_WORDS), None)
    motion = next((_MOTION_WORDS[w] for w in words if w in _MOTION_WORDS), None)
    timbre = None
    for name, vocabulary in _TIMBRE_WORDS:
        if any(w in vocabulary for w in words):
            timbre = name
            break
    if pitch is None and timbre is None and count is None and motion is None:
        raise ValueError(
            f"no pitch, timbre, count or motion found in {text!r}: expected a description such as "
            f"{EXAMPLE_CAPTION!r} (pitches: {', '.join(PITCHES)}; timbres: pure tone, buzz, hiss; "
            f"one to three beeps; motions: {', '.join(MOTIONS)})"
        )
    return PartialSound(pitch=pitch, timbre=timbre, count=count, motion=motion)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Beep:
    """One beep as rendered: start and length in seconds."""

    start: float
    seconds: float


@dataclass(frozen=True)
class Layout:
    """The jitter of one rendering: the exact centre frequency, the beeps, the peak amplitude."""

    centre_hz: float
    beeps: tuple[Beep, ...]
    amplitude: float


def layout(sound: Sound, rng: np.random.Generator | None = None, duration: float = DURATION) -> Layout:
    """Where and how ``sound`` is rendered. Without ``rng``: the exact centre frequency, mid-range
    lengths and amplitude, beeps centred in the clip. With ``rng``: everything drawn uniformly."""

    def draw(bounds):
        lo, hi = bounds
        return (lo + hi) / 2 if rng is None else float(rng.uniform(lo, hi))

    centre = PITCH_HZ[sound.pitch] * 2.0 ** draw((-PITCH_JITTER, PITCH_JITTER))
    lengths = [draw(BEEP_SECONDS) for _ in range(sound.count)]
    gaps = [draw(GAP_SECONDS) for _ in range(sound.count - 1)]
    total = sum(lengths) + sum(gaps)
    room = duration - total - 2 * MARGIN_SECONDS
    if room < 0:
        raise ValueError(f"{sound.count} beeps do not fit a clip of {duration} s")
    t = MARGIN_SECONDS + (room / 2 if rng is None else float(rng.uniform(0, room)))
    beeps = []
    for k, length in enumerate(lengths):
        beeps.append(Beep(t, length))
        t += length + (gaps[k] if k < len(gaps) else 0.0)
    return Layout(centre, tuple(beeps), draw(AMPLITUDE))


def _frequency(sound: Sound, centre: float, n: int) -> np.ndarray:
    """Instantaneous frequency of a beep of ``n`` samples (Hz), gliding through ``centre``."""
    direction = {"steady": 0.0, "rising": 1.0, "falling": -1.0}[sound.motion]
    position = (np.arange(n) + 0.5) / n - 0.5
    return centre * 2.0 ** (direction * GLIDE * position)


def _envelope(n: int, sample_rate: int) -> np.ndarray:
    ramp = min(int(round(RAMP_SECONDS * sample_rate)), n // 2)
    env = np.ones(n)
    if ramp > 0:
        rise = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
        env[:ramp] = rise
        env[n - ramp :] = rise[::-1]
    return env


def _tone(freq: np.ndarray, sample_rate: int, rng: np.random.Generator | None) -> np.ndarray:
    phase0 = 0.0 if rng is None else float(rng.uniform(0, 2 * np.pi))
    return np.sin(2 * np.pi * np.cumsum(freq) / sample_rate + phase0)


def _buzz(freq: np.ndarray, sample_rate: int, rng: np.random.Generator | None) -> np.ndarray:
    """Every harmonic below the limit, harmonic k at amplitude 1/sqrt(k) (the fundamental is the
    strongest, and each octave of harmonics carries about the same power as the fundamental).
    Harmonics fade out as they near the limit, so a gliding buzz never aliases."""
    limit = min(BUZZ_LIMIT, 0.4 * sample_rate)
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    phase0 = 0.0 if rng is None else float(rng.uniform(0, 2 * np.pi))
    out = np.zeros_like(freq)
    for k in range(1, int(limit / freq.min()) + 1):
        weight = np.clip((limit - k * freq) / (0.1 * limit), 0.0, 1.0)
        if weight.any():
            out += weight * np.sin(k * (phase + phase0)) / math.sqrt(k)
    return out


_HISS_FRAME = 1024


def _hiss(freq: np.ndarray, sample_rate: int, rng: np.random.Generator | None) -> np.ndarray:
    """White noise band-passed, frame by frame, to :data:`HISS_BAND` octaves around the current
    frequency, with equal power per octave inside the band (soft edges). Overlap-added with a
    square-root Hann window at a quarter-frame hop, which sums to a constant."""
    noise_rng = rng if rng is not None else np.random.default_rng(0)
    n = len(freq)
    frame = max(256, int(2 ** round(math.log2(_HISS_FRAME * sample_rate / SAMPLE_RATE))))
    hop = frame // 4
    padded = n + 2 * frame
    noise = noise_rng.standard_normal(padded)
    window = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / frame))
    bins = np.fft.rfftfreq(frame, 1 / sample_rate)
    safe = np.maximum(bins, 1.0)
    out = np.zeros(padded)
    half = HISS_BAND / 2
    edge = 0.1
    for start in range(0, padded - frame + 1, hop):
        centre_sample = min(max(start + frame // 2 - frame, 0), n - 1)
        distance = np.abs(np.log2(safe / freq[centre_sample]))
        mask = np.clip((half + edge / 2 - distance) / edge, 0.0, 1.0)
        mask = 0.5 - 0.5 * np.cos(np.pi * mask)
        mask[0] = 0.0
        spectrum = np.fft.rfft(noise[start : start + frame] * window) * mask / np.sqrt(safe)
        out[start : start + frame] += np.fft.irfft(spectrum, frame) * window
    return out[frame : frame + n]


_SYNTHS = {"tone": _tone, "buzz": _buzz, "hiss": _hiss}


def render(
    sound: Sound,
    sample_rate: int = SAMPLE_RATE,
    rng: np.random.Generator | None = None,
    duration: float = DURATION,
) -> np.ndarray:
    """``sound`` as a mono float32 waveform of ``duration`` seconds, peak at the layout's amplitude.

    Without ``rng`` the rendering is canonical (see :func:`layout`); with it the centre
    frequency, beep lengths and places, amplitude, phases and noise are all drawn from ``rng``,
    so a model cannot learn one exact waveform per caption.
    """
    sample_rate = int(sample_rate)
    if sample_rate < 4000:
        raise ValueError(f"sample rate must be at least 4000 Hz, got {sample_rate}")
    plan = layout(sound, rng, duration)
    total = int(round(duration * sample_rate))
    clip = np.zeros(total)
    for beep in plan.beeps:
        start = int(round(beep.start * sample_rate))
        n = min(int(round(beep.seconds * sample_rate)), total - start)
        freq = _frequency(sound, plan.centre_hz, n)
        wave = _SYNTHS[sound.timbre](freq, sample_rate, rng)
        wave = wave / max(float(np.abs(wave).max()), 1e-9)
        clip[start : start + n] = wave * _envelope(n, sample_rate)
    return (clip * plan.amplitude).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoundsItem:
    waveform: np.ndarray
    caption: str
    sound: Sound
    sample_rate: int


class SoundsDataset:
    """An endless, indexable dataset: item ``i`` depends only on ``(seed, i)``."""

    def __init__(self, seed: int = 0, sample_rate: int = SAMPLE_RATE, duration: float = DURATION):
        self.seed = int(seed)
        self.sample_rate = int(sample_rate)
        self.duration = float(duration)

    def __repr__(self) -> str:
        return f"SoundsDataset(seed={self.seed}, sample_rate={self.sample_rate}, duration={self.duration})"

    def item(self, i: int) -> SoundsItem:
        if i < 0:
            raise IndexError(f"item index must be non-negative, got {i}")
        rng = np.random.default_rng([self.seed, _DATASET_STREAM, int(i)])
        sound = sample_sound(rng)
        text = caption(sound, rng)
        return SoundsItem(render(sound, self.sample_rate, rng, self.duration), text, sound, self.sample_rate)

    __getitem__ = item

    def batch(self, start: int, count: int) -> list[SoundsItem]:
        return [self.item(i) for i in range(start, start + count)]

    def arrays(self, start: int, count: int) -> tuple[np.ndarray, list[str]]:
        """Waveforms stacked as ``count``×T float32, with their captions."""
        items = self.batch(start, count)
        return np.stack([it.waveform for it in items]), [it.caption for it in items]

    def __iter__(self) -> Iterator[SoundsItem]:
        i = 0
        while True:
            yield self.item(i)
            i += 1


# Tags in the seed keys keep the dataset's items and the evaluation prompts in separate streams
# (and apart from Shapes', whose keys are [seed, i] and [seed, 0x50524F4D, 1]).
_DATASET_STREAM = 0x534E4453
_PROMPT_STREAM = 0x534E5052


def sample_prompts(n: int, seed: int = 1234) -> list[tuple[str, Sound]]:
    """``n`` (caption, sound) pairs for evaluation, from a stream no dataset item uses."""
    rng = np.random.default_rng([int(seed), _PROMPT_STREAM, 1])
    out = []
    for _ in range(n):
        sound = sample_sound(rng)
        out.append((caption(sound, rng), sound))
    return out


__all__: Sequence[str] = (
    "AMPLITUDE", "BEEP_SECONDS", "Beep", "COUNTS", "COUNT_BEEPS", "COUNT_DETERMINERS", "COUNT_TIMES", "DURATION",
    "GAP_SECONDS", "GLIDE", "HISS_BAND", "Layout", "MOTIONS", "MOTION_ADJECTIVES", "MOTION_PHRASES",
    "PITCHES", "PITCH_HZ", "PITCH_JITTER", "PITCH_WORDS", "PartialSound", "SAMPLE_RATE", "Sound", "SoundsDataset",
    "SoundsItem", "TEMPLATES", "TIMBRES", "TIMBRE_WORDS", "caption", "caption_with_template", "layout",
    "parse_caption", "render", "sample_prompts", "sample_sound",
)
