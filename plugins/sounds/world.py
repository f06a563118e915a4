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
from typing import Any, Sequence

import numpy as np

from loom.plugins.common.world import SeededDataset

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


#: Each attribute's distribution as :func:`sample_sound` draws it (value → probability): what a
#: prompt leaving the attribute open should spread over.
DISTRIBUTION: dict[str, dict[Any, float]] = {
    name: {v: 1 / len(values) for v in values}
    for name, values in (("pitch", PITCHES), ("timbre", TIMBRES), ("count", COUNTS), ("motion", MOTIONS))
}


def _held_out_triples() -> frozenset[tuple[str, str, str]]:
    # Pitch i, timbre i+1 and motion i+2 (mod 3): a transversal of the 3×3×3 cube, so every
    # value of every attribute is held out in exactly one triple, every pitch–timbre,
    # pitch–motion and timbre–motion pair is held out at most once and is still trained with
    # the two other third values: a held-out triple is a new combination of learned parts.
    return frozenset(
        (PITCHES[i], TIMBRES[(i + 1) % len(TIMBRES)], MOTIONS[(i + 2) % len(MOTIONS)]) for i in range(len(PITCHES))
    )


#: (pitch, timbre, motion) combinations no training sound has, so evaluation can compare
#: combinations a model has heard with ones it has not: (low, buzz, falling), (medium, hiss,
#: steady) and (high, tone, rising).
HELD_OUT: frozenset[tuple[str, str, str]] = _held_out_triples()


def is_held_out(s: "Sound | PartialSound") -> bool:
    """Whether a sound's (pitch, timbre, motion) is one of :data:`HELD_OUT` (a partial sound
    leaving any of them open is not)."""
    return (s.pitch, s.timbre, s.motion) in HELD_OUT


def sample_training_sound(rng: np.random.Generator) -> Sound:
    """A random sound outside :data:`HELD_OUT` (resampled until so): uniform over the rest."""
    while True:
        sound = sample_sound(rng)
        if not is_held_out(sound):
            return sound


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
COUNT_BEEPS: dict[int, tuple[str, ...]] = {
    1: ("1 beep", "one beep"),
    2: ("2 beeps", "two beeps"),
    3: ("3 beeps", "three beeps"),
}
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


# Everyday captions: what people type. They leave attributes out (the clip still holds a whole
# sound, so a model learns to choose what the prompt leaves open) and use every word the parser
# knows, in several orders and sentence frames. Every phrase below names one attribute with
# words of that attribute only, so parse_caption reads back exactly what a caption states.

#: How often an everyday training caption states each attribute (a caption stating none is
#: drawn again, so the parser always finds something).
STATE_RATES: dict[str, float] = {"pitch": 0.6, "timbre": 0.7, "count": 0.5, "motion": 0.5}
#: Share of training captions drawn from the full templates above instead.
FULL_CAPTION_SHARE = 0.3
_ATTRIBUTES = ("pitch", "timbre", "count", "motion")

_EVERYDAY_PITCH_ADJECTIVES = {
    "low": PITCH_WORDS["low"],
    "medium": PITCH_WORDS["medium"] + ("mid-range", "middle-pitched"),
    "high": PITCH_WORDS["high"],
}
_PITCH_PHRASES = {
    "low": ("at a low pitch", "pitched low", "in a deep register", "low in pitch"),
    "medium": ("at a medium pitch", "at a mid pitch", "pitched in the middle", "in a middle register"),
    "high": ("at a high pitch", "pitched high", "in a high register", "high in pitch"),
}
#: (singular, plural) nouns; a plural without a number states no count (the parser reads none).
_EVERYDAY_TIMBRE_NOUNS: dict[str, tuple[tuple[str, str], ...]] = {
    "tone": TIMBRE_WORDS["tone"] + (("tone", "tones"), ("whistle", "whistles"), ("sine wave", "sine waves"),
                                    ("sine beep", "sine beeps"), ("pure beep", "pure beeps")),
    "buzz": TIMBRE_WORDS["buzz"] + (("buzzy beep", "buzzy beeps"), ("buzzing sound", "buzzing sounds")),
    "hiss": TIMBRE_WORDS["hiss"] + (("burst of noise", "bursts of noise"), ("noisy beep", "noisy beeps"),
                                    ("hissy sound", "hissy sounds"), ("hissing sound", "hissing sounds")),
}  # fmt: skip
#: Nouns naming no timbre ("tone" and "noise" name one).
_PLAIN_NOUNS = (("beep", "beeps"), ("sound", "sounds"), ("blip", "blips"), ("bleep", "bleeps"))
#: Uncountable forms, used only when the count is left open ("low buzzing").
_MASS_NOUNS: dict[str | None, tuple[str, ...]] = {
    "tone": ("sine",),
    "buzz": ("buzzing",),
    "hiss": ("hissing", "noise"),
    None: ("beeping",),
}
_EVERYDAY_MOTION_ADJECTIVES = {
    "steady": MOTION_ADJECTIVES["steady"] + ("constant",),
    "rising": MOTION_ADJECTIVES["rising"],
    "falling": MOTION_ADJECTIVES["falling"],
}
_EVERYDAY_MOTION_PHRASES = {
    "steady": MOTION_PHRASES["steady"] + ("that stays level", "flat in pitch", "holding steady"),
    "rising": MOTION_PHRASES["rising"] + ("that rises", "going up", "sweeping upwards"),
    "falling": MOTION_PHRASES["falling"] + ("that falls", "going down", "sweeping downwards"),
}
#: Count determiners before a plural noun (a singular for one).
_EVERYDAY_COUNT_DETERMINERS = {1: ("one", "a single", "1"), 2: ("two", "a pair of", "2"), 3: ("three", "3")}
#: Count determiners before a singular noun ("a double beep").
_COUNT_SINGULAR_DETERMINERS = {1: ("a single",), 2: ("a double",), 3: ("a triple",)}
_COUNT_TIMES_PHRASES = ("{}", "beeping {}", "played {}")

# Sentence frames around the whole description. Evaluation uses frames of its own (besides the
# bare "{}"), so the underspecified split also measures phrasings no model trained on. None of
# their words is one the parser reads.
TRAINING_FRAMES: tuple[str, ...] = (
    "{}", "{}", "{}", "a sound of {}", "the sound of {}", "{} please", "play {}", "there is {}", "i want {}",
    "{}.",
)  # fmt: skip
EVALUATION_FRAMES: tuple[str, ...] = ("{}", "could you make {}", "generate {}", "{}, thanks", "i would like to hear {}")


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _keywords(sound: Sound, stated: set[str], rng: np.random.Generator) -> str:
    """The typed-keywords style: "buzz, low pitch, 2 beeps, rising" in any order."""
    words = []
    if "pitch" in stated:
        named = (f"{sound.pitch} pitch", f"pitch {sound.pitch}")
        words.append(_pick(rng, named + _EVERYDAY_PITCH_ADJECTIVES[sound.pitch]))
    if "timbre" in stated:
        words.append(_pick(rng, _EVERYDAY_TIMBRE_NOUNS[sound.timbre])[0])
    if "count" in stated:
        words.append(_pick(rng, COUNT_BEEPS[sound.count] + COUNT_TIMES[sound.count]))
    if "motion" in stated:
        words.append(_pick(rng, _EVERYDAY_MOTION_ADJECTIVES[sound.motion] + _EVERYDAY_MOTION_PHRASES[sound.motion]))
    return ", ".join(words[k] for k in rng.permutation(len(words)))


def _noun_phrase(sound: Sound, stated: set[str], rng: np.random.Generator) -> str:
    """ "[count] [adjectives] noun [phrases]": "two deep rising buzzes", "a hiss, pitched high, twice"."""
    before, after = [], []
    if "pitch" in stated:
        if rng.random() < 0.65:
            before.append(_pick(rng, _EVERYDAY_PITCH_ADJECTIVES[sound.pitch]))
        else:
            after.append(_pick(rng, _PITCH_PHRASES[sound.pitch]))
    if "motion" in stated:
        if rng.random() < 0.55:
            before.append(_pick(rng, _EVERYDAY_MOTION_ADJECTIVES[sound.motion]))
        else:
            after.append(_pick(rng, _EVERYDAY_MOTION_PHRASES[sound.motion]))
    if len(before) == 2 and rng.random() < 0.5:
        before.reverse()  # "a rising low buzz" as well as "a low rising buzz"
    timbre = sound.timbre if "timbre" in stated else None
    singular, plural = _pick(rng, _EVERYDAY_TIMBRE_NOUNS[sound.timbre] if timbre else _PLAIN_NOUNS)
    if "count" in stated:
        u = rng.random()
        if u < 0.2:  # "a hiss ... twice"
            after.append(_pick(rng, _COUNT_TIMES_PHRASES).format(_pick(rng, COUNT_TIMES[sound.count])))
            determiner, noun = "a", singular
        elif u < 0.3 and timbre:  # "3 beeps of low buzz"
            determiner = _pick(rng, COUNT_BEEPS[sound.count]) + " of"
            noun = _pick(rng, (singular,) + _MASS_NOUNS[timbre])
        elif u < 0.4:  # "a double beep"
            determiner, noun = _pick(rng, _COUNT_SINGULAR_DETERMINERS[sound.count]), singular
        else:
            determiner = _pick(rng, _EVERYDAY_COUNT_DETERMINERS[sound.count])
            noun = singular if sound.count == 1 else plural
    else:
        # The noun's number is drawn apart from the count: with no number stated, "a buzz"
        # and "buzzes" both leave the count open, as the parser reads them.
        u = rng.random()
        if u < 0.15:
            determiner, noun = "", _pick(rng, _MASS_NOUNS[timbre])
        elif u < 0.6:
            determiner, noun = "a", singular
        elif u < 0.75:
            determiner, noun = "some", plural
        else:
            determiner, noun = "", _pick(rng, (singular, plural))
    head = " ".join(before + [noun])
    if determiner == "a":
        head = _article(head)
    elif determiner:
        head = f"{determiner} {head}"
    for k in rng.permutation(len(after)):
        head += _pick(rng, (", ", " ")) + after[k]
    return head


def describe(
    sound: Sound, stated: "set[str] | Sequence[str]", rng: np.random.Generator, frames: Sequence[str] = TRAINING_FRAMES
) -> str:
    """An everyday caption of ``sound`` stating exactly the attributes in ``stated`` (some of
    "pitch", "timbre", "count", "motion"; at least one), inside one of ``frames``."""
    stated = set(stated)
    unknown = stated - set(_ATTRIBUTES)
    if unknown or not stated:
        raise ValueError(f"describe states some of {', '.join(_ATTRIBUTES)} (at least one), got {sorted(stated)!r}")
    keywords = len(stated) > 1 and rng.random() < 0.2  # a lone keyword ("deep") is no prompt
    text = _keywords(sound, stated, rng) if keywords else _noun_phrase(sound, stated, rng)
    frame = _pick(rng, frames)
    if frame.startswith("there is ") and not text.startswith(("a ", "an ", "one ", "1 ")):
        frame = "there are " + frame[len("there is ") :]
    return frame.format(text)


def _stated_by_rates(rng: np.random.Generator) -> set[str]:
    while True:
        stated = {a for a in _ATTRIBUTES if rng.random() < STATE_RATES[a]}
        if stated:
            return stated


def everyday_caption(sound: Sound, rng: np.random.Generator) -> str:
    """A training caption: a full template (:data:`FULL_CAPTION_SHARE` of the time) or an
    everyday one leaving attributes out at :data:`STATE_RATES`."""
    if rng.random() < FULL_CAPTION_SHARE:
        return caption(sound, rng)
    return describe(sound, _stated_by_rates(rng), rng)


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


_PITCH_WORDS = {
    "low": "low",
    "deep": "low",
    "medium": "medium",
    "mid": "medium",
    "middle": "medium",
    "high": "high",
    "shrill": "high",
}
# In order of precedence: "buzzing tone" is a buzz, "hissing tone" a hiss.
_TIMBRE_WORDS = (
    ("buzz", ("buzz", "buzzes", "buzzer", "buzzers", "buzzing", "buzzy")),
    ("hiss", ("hiss", "hisses", "hissing", "hissy", "noise", "noises", "noisy")),
    ("tone", ("tone", "tones", "sine", "pure", "whistle", "whistles")),
)
_COUNT_WORDS = {
    "1": 1,
    "one": 1,
    "single": 1,
    "once": 1,
    "2": 2,
    "two": 2,
    "twice": 2,
    "pair": 2,
    "double": 2,
    "3": 3,
    "three": 3,
    "thrice": 3,
    "triple": 3,
}
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
    sound: Sound, sample_rate: int = SAMPLE_RATE, rng: np.random.Generator | None = None, duration: float = DURATION
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


class SoundsDataset(SeededDataset[SoundsItem]):
    """An endless, indexable dataset: item ``i`` depends only on ``(seed, i)``. ``arrays`` stacks
    the waveforms as ``count``×T float32.

    With ``training=True`` the items are what models train on: no sound in a :data:`HELD_OUT`
    combination, and :func:`everyday_caption` captions, which leave attributes out. Otherwise
    every sound may occur and every caption states every attribute.
    """

    data = "waveform"

    def __init__(
        self, seed: int = 0, sample_rate: int = SAMPLE_RATE, duration: float = DURATION, training: bool = False
    ):
        self.seed = int(seed)
        self.sample_rate = int(sample_rate)
        self.duration = float(duration)
        self.training = bool(training)

    def __repr__(self) -> str:
        return (
            f"SoundsDataset(seed={self.seed}, sample_rate={self.sample_rate}, duration={self.duration}, "
            f"training={self.training})"
        )

    def item(self, i: int) -> SoundsItem:
        if i < 0:
            raise IndexError(f"item index must be non-negative, got {i}")
        rng = np.random.default_rng([self.seed, _DATASET_STREAM, int(i)])
        if self.training:
            sound = sample_training_sound(rng)
            text = everyday_caption(sound, rng)
        else:
            sound = sample_sound(rng)
            text = caption(sound, rng)
        return SoundsItem(render(sound, self.sample_rate, rng, self.duration), text, sound, self.sample_rate)


# Tags in the seed keys keep the dataset's items, the evaluation prompts and the underspecified
# prompts in separate streams (and apart from Shapes', whose keys are [seed, i] and
# [seed, 0x50524F4D, 1]).
_DATASET_STREAM = 0x534E4453
_PROMPT_STREAM = 0x534E5052
_UNDERSPECIFIED_STREAM = 0x534E5553

COMBINATIONS: tuple[str, ...] = ("any", "seen", "unseen")


def sample_prompts(n: int, seed: int = 1234, combinations: str = "any") -> list[tuple[str, Sound]]:
    """``n`` (caption, sound) pairs for evaluation, from a stream no dataset item uses. Every
    caption states every attribute. ``combinations``: "any" sound, only those "seen" in training,
    or only "unseen" ones (a :data:`HELD_OUT` triple, any count); drawn by resampling, so "any"
    gives the same prompts it always has."""
    _check("combinations", combinations, COMBINATIONS)
    rng = np.random.default_rng([int(seed), _PROMPT_STREAM, 1])
    out = []
    for _ in range(n):
        sound = sample_sound(rng)
        while combinations != "any" and is_held_out(sound) != (combinations == "unseen"):
            sound = sample_sound(rng)
        out.append((caption(sound, rng), sound))
    return out


#: What the prompts of :func:`sample_underspecified_prompts` state, in turn: one attribute,
#: two, or all but one; never all four.
UNDERSPECIFIED_KINDS: tuple[tuple[str, ...], ...] = (
    ("timbre",), ("pitch",), ("motion",), ("count",),
    ("pitch", "timbre"), ("timbre", "count"), ("pitch", "motion"), ("timbre", "motion"),
    ("pitch", "timbre", "motion"), ("pitch", "timbre", "count"), ("timbre", "count", "motion"),
    ("pitch", "count", "motion"),
)  # fmt: skip


def sample_underspecified_prompts(n: int, seed: int = 1234, combinations: str = "any") -> list[tuple[str, Sound]]:
    """``n`` (caption, sound) pairs whose everyday captions, in :data:`EVALUATION_FRAMES`, leave
    at least one attribute unsaid (the kinds of :data:`UNDERSPECIFIED_KINDS` in turn). The sound
    is the one the caption was written from; what the caption leaves open was drawn as
    :func:`sample_sound` draws it. From a stream of its own, apart from the dataset's and
    :func:`sample_prompts`'. ``combinations`` as there, judged on what the caption states (only a
    caption stating pitch, timbre and motion can be unseen)."""
    _check("combinations", combinations, COMBINATIONS)
    kinds = UNDERSPECIFIED_KINDS
    if combinations == "unseen":
        kinds = tuple(k for k in kinds if {"pitch", "timbre", "motion"} <= set(k))
    rng = np.random.default_rng([int(seed), _UNDERSPECIFIED_STREAM, 1])
    out: list[tuple[str, Sound]] = []
    i = 0
    while len(out) < n:
        sound = sample_sound(rng)
        text = describe(sound, kinds[i % len(kinds)], rng, EVALUATION_FRAMES)
        i += 1
        if combinations == "any" or is_held_out(parse_caption(text)) == (combinations == "unseen"):
            out.append((text, sound))
    return out


def complete_sound(spec: PartialSound, rng: np.random.Generator) -> Sound:
    """A sound with everything ``spec`` states; what it leaves unsaid is drawn as
    :func:`sample_sound` draws it."""
    return Sound(
        pitch=spec.pitch or _pick(rng, PITCHES),
        timbre=spec.timbre or _pick(rng, TIMBRES),
        count=spec.count or _pick(rng, COUNTS),
        motion=spec.motion or _pick(rng, MOTIONS),
    )


def complete_prompt(text: str, rng: np.random.Generator) -> str:
    """``text`` as a caption stating every attribute (the first template), with what it leaves
    unsaid drawn by :func:`complete_sound`; ``text`` itself when it names no attribute."""
    try:
        spec = parse_caption(text)
    except ValueError:
        return text
    return caption(complete_sound(spec, rng), rng, template=0)


__all__: Sequence[str] = (
    "AMPLITUDE",
    "BEEP_SECONDS",
    "Beep",
    "COMBINATIONS",
    "COUNTS",
    "COUNT_BEEPS",
    "COUNT_DETERMINERS",
    "COUNT_TIMES",
    "DISTRIBUTION",
    "DURATION",
    "EVALUATION_FRAMES",
    "FULL_CAPTION_SHARE",
    "GAP_SECONDS",
    "GLIDE",
    "HELD_OUT",
    "HISS_BAND",
    "Layout",
    "MOTIONS",
    "MOTION_ADJECTIVES",
    "MOTION_PHRASES",
    "PITCHES",
    "PITCH_HZ",
    "PITCH_JITTER",
    "PITCH_WORDS",
    "PartialSound",
    "SAMPLE_RATE",
    "STATE_RATES",
    "Sound",
    "SoundsDataset",
    "SoundsItem",
    "TEMPLATES",
    "TIMBRES",
    "TIMBRE_WORDS",
    "TRAINING_FRAMES",
    "UNDERSPECIFIED_KINDS",
    "caption",
    "caption_with_template",
    "complete_prompt",
    "complete_sound",
    "describe",
    "everyday_caption",
    "is_held_out",
    "layout",
    "parse_caption",
    "render",
    "sample_prompts",
    "sample_sound",
    "sample_training_sound",
    "sample_underspecified_prompts",
)
