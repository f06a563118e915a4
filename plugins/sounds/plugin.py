"""The Sounds plugin: registers the Sounds world, which sound families train on as log-mel
spectrograms (``loom train FAMILY --data sounds``) and SoundsEval grades (``loom eval sounds``).
Torch is imported only when training data is made."""

from __future__ import annotations

import numpy as np

from loom.core import InputError, hookimpl
from loom.plugins.common.report import run_in_batches
from loom.plugins.common.world import ProceduralWorld

from . import world
from .evaluate import DIVERSITY_PROMPTS, SoundsEval
from .world import DURATION, SAMPLE_RATE, SoundsDataset, is_held_out, parse_caption

LOOM_PLUGIN_API = "1.3"

#: Prompts of the sample grid for Sounds training (fixed, so grids compare across runs).
SOUNDS_SAMPLE_PROMPTS = (
    "three rising high beeps",
    "a low steady pure tone",
    "two falling medium buzzes",
    "a single high-pitched hiss, sweeping up",
    "3 beeps of low buzz, falling in pitch",
    "a pair of deep steady hissing noises",
    "one shrill descending sine tone",
    "two medium-pitched rising noise bursts",
)


class SoundsData:
    """Sounds clips ``0 .. pool-1`` of ``SoundsDataset(seed, training=True)`` (everyday captions
    leaving attributes out at the world's rates; no held-out combination), as normalised
    log-mel spectrograms of ``shape`` (1 × mels × frames, see ``loom.plugins.common.mel.MelImage``),
    computed once and held in memory as uint8 (steps of 120 dB / 255 = 0.47 dB, far below what
    SoundsEval or an ear notices: 12,000 clips take 74 MB)."""

    def __init__(self, shape: tuple[int, int, int], pool: int = 12000, seed: int = 0, progress: bool = False):
        import torch
        from tqdm.auto import tqdm

        from loom.plugins.common.mel import MelCodec, MelImage, MelSettings

        channels, mels, frames = shape
        settings = MelSettings()
        samples = int(round(DURATION * SAMPLE_RATE))
        if channels != 1 or mels != settings.n_mels or frames < settings.frames(samples):
            raise InputError(
                f"Sounds trains on 1×{settings.n_mels}×frames log-mel spectrograms (at least {settings.frames(samples)} "
                f"frames for a {DURATION} s clip); this family trains on {channels}×{mels}×{frames} samples"
            )
        self.layout = MelImage(settings=settings, samples=samples, frames=frames)
        self.pool, self.seed = pool, seed
        dataset = SoundsDataset(seed, sample_rate=settings.sample_rate, training=True)
        codec = MelCodec(settings)
        self.captions: list[str] = []
        self.sounds: list = []
        chunks = []
        with tqdm(total=pool, desc="rendering sounds", unit="clip", disable=not progress, delay=1.0) as bar:
            for start in range(0, pool, 500):
                items = dataset.batch(start, min(500, pool - start))
                mel = self.layout.encode(torch.from_numpy(np.stack([it.waveform for it in items])), codec)
                chunks.append((mel[:, 0, :, :, None] * 255).round().byte().numpy())
                self.captions += [it.caption for it in items]
                self.sounds += [it.sound for it in items]
                bar.update(len(items))
        self.pixels = np.concatenate(chunks)

    def describe(self) -> dict:
        return {"data": "sounds", "pool": self.pool, "data_seed": self.seed, "captions": "everyday"}

    def __len__(self) -> int:
        return self.pool

    def images(self, idx: list[int], rng: np.random.Generator) -> np.ndarray:
        return self.pixels[idx]

    def sample_prompts(self) -> list[str]:
        return list(SOUNDS_SAMPLE_PROMPTS)


def _clips(pipeline, texts: list[str], seeds: list[int], batch_size: int, progress: bool, desc: str = "evaluating"):
    """The clips for ``texts`` (item i seeded ``seeds[i]``) and their sample rate."""
    clips, rate = [], None
    for audio in run_in_batches(pipeline, texts, seeds, batch_size, progress, desc, unit="clip"):
        rate = audio.sample_rate
        clips.extend(audio.clip(i) for i in range(len(audio)))
    return clips, rate


class SoundsWorld(ProceduralWorld):
    """One to three beeps of one pitch, timbre and motion, graded by :class:`SoundsEval`."""

    module = world
    name = "sounds"
    modality = "sounds"
    checker = "SoundsEval"
    prompt_word = "caption"

    def training_data(self, shape, pool, seed, progress=False) -> SoundsData:
        return SoundsData(shape, pool=pool or 12000, seed=seed, progress=progress)

    def is_unseen(self, prompt):
        return is_held_out(parse_caption(prompt))

    def evaluate(self, pipeline, prompts, seeds, batch_size=32, progress=True):
        clips, rate = _clips(pipeline, prompts, seeds, batch_size, progress)
        report = SoundsEval().evaluate_many(clips, prompts, rate)
        report.prompts = list(prompts)
        return report

    def diversity(self, pipeline, seeds, progress=True) -> dict:
        texts = [p for p in DIVERSITY_PROMPTS for _ in range(seeds)]
        clips, rate = _clips(pipeline, texts, [i % seeds for i in range(len(texts))], 16, progress, "diversity")
        per_prompt = [clips[k * seeds : (k + 1) * seeds] for k in range(len(DIVERSITY_PROMPTS))]
        div = SoundsEval().diversity(per_prompt, DIVERSITY_PROMPTS, rate)
        return {
            "prompts": len(DIVERSITY_PROMPTS),
            "seeds": seeds,
            "per_attribute": {a: v for a, v in div.per_attribute.items() if v is not None},
            "diversity": div.overall,
        }


@hookimpl
def loom_register_worlds(register):
    register(SoundsWorld())
