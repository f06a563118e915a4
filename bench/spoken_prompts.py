"""Spoken prompts against typed ones: ShapesEval of the default image generator's pictures for
fresh Shapes prompts typed, spoken by the Piper voice (the `speech` generator, held in: the
recogniser trained on it), and spoken by an espeak-ng voice the recogniser never heard; plus what
the recogniser heard, its speed against real time, and the TTS time per clip.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python bench/spoken_prompts.py [-n 100] [--generator vae]

Needs espeak-ng (an OS package) for the held-out voice row; without it that row is skipped.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time

import numpy as np


def espeak_audio(texts, voice):
    import io

    import soundfile

    from loom.core import Audio

    clips = []
    for text in texts:
        wav = subprocess.run(
            ["espeak-ng", "-v", voice, "-s", "160", "-p", "50", "--stdout", text], check=True, capture_output=True
        ).stdout
        data, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
        clips.append(data)
    return Audio.from_clips(clips, rate)


def words(text):
    from loom.plugins.spoken.training import words as split

    return [w.replace("centre", "center") for w in split(text) if w != ","]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100, help="fresh prompts")
    parser.add_argument("--generator", default="vae")
    parser.add_argument("--seed", type=int, default=None, help="prompt seed (default: loom eval's, 20261125)")
    args = parser.parse_args()

    import torch

    from loom.api import default_spec, pipeline_for, spoken_spec
    from loom.core import Text
    from loom.evaluation import EVAL_SEED
    from loom.plugins.shapes import ShapesEval, sample_prompts
    from loom.plugins.speech import Speech
    from loom.plugins.spoken import SpokenPrompt
    from loom.plugins.spoken.training import HELD_OUT_VOICE, edit_distance

    torch.set_num_threads(1)
    pairs = sample_prompts(args.n, EVAL_SEED if args.seed is None else args.seed)
    texts, scenes = [c for c, _ in pairs], [s for _, s in pairs]
    image_seeds = list(range(len(texts)))

    def score(pipeline, inputs):
        images = []
        for start in range(0, len(texts), 32):
            chunk = (
                inputs.take(range(start, min(start + 32, len(texts))))
                if not isinstance(inputs, list)
                else inputs[start : start + 32]
            )
            images.extend(
                pipeline.run(chunk, image_seeds[start : start + len(chunk)], progress=False).output.to_numpy()
            )
        return ShapesEval().evaluate_many(images, scenes)

    rows = {"typed": (score(pipeline_for(default_spec(args.generator, size=None)), texts), None)}

    speech = Speech().load()
    start = time.perf_counter()
    piper = speech(Text(texts), seed=0)
    tts_seconds = (time.perf_counter() - start) / len(texts)
    quiet = Speech(noise_scale=0.0, noise_w=0.0).load()
    start = time.perf_counter()
    quiet(Text(texts[:20]), seed=0)
    tts_quiet_seconds = (time.perf_counter() - start) / min(20, len(texts))
    voices = {"spoken, Piper (held in)": piper}
    if shutil.which("espeak-ng"):
        voices[f"spoken, espeak-ng {HELD_OUT_VOICE} (never heard)"] = espeak_audio(texts, HELD_OUT_VOICE)
    else:
        print("espeak-ng not found: no held-out voice row")

    encoder = SpokenPrompt().load()
    spoken = pipeline_for(spoken_spec(args.generator, size=None))
    heard = {}
    for name, audio in voices.items():
        seconds = sum(audio.length(i) for i in range(len(audio))) / audio.sample_rate
        start = time.perf_counter()
        got = encoder.transcribe(audio)
        recognise = time.perf_counter() - start
        errors = sum(edit_distance(words(g), words(t)) for g, t in zip(got, texts))
        heard[name] = {
            "exact": float(np.mean([words(g) == words(t) for g, t in zip(got, texts)])),
            "wer": errors / sum(len(words(t)) for t in texts),
            "real_time": recognise / seconds,
            "clip_seconds": seconds / len(texts),
            "example": got[0],
        }
        rows[name] = (score(spoken, audio), heard[name])

    attributes = list(rows["typed"][0].per_attribute)
    print(
        f"{len(texts)} fresh prompts (sample_prompts seed {EVAL_SEED if args.seed is None else args.seed}), "
        f"generator {args.generator!r}, image seeds 0..{len(texts) - 1}"
    )
    print(
        f"{'prompt':48s} " + " ".join(f"{a:>10s}" for a in attributes) + f" {'whole':>7s} {'words ok':>9s} {'WER':>6s}"
    )
    for name, (report, h) in rows.items():
        cells = " ".join(
            f"{report.per_attribute[a]:10.3f}" if report.per_attribute[a] is not None else f"{'-':>10s}"
            for a in attributes
        )
        extra = f" {h['exact']:9.3f} {h['wer']:6.3f}" if h else ""
        print(f"{name:48s} {cells} {report.whole_prompt:7.3f}{extra}")
    chance = rows["typed"][0].chance
    print(
        f"{'chance':48s} "
        + " ".join(f"{chance[a]:10.3f}" if chance[a] is not None else f"{'-':>10s}" for a in attributes)
        + f" {chance['whole_prompt']:7.3f}"
    )
    print(f"first prompt: {texts[0]!r}")
    for name, h in heard.items():
        print(f"  heard ({name}): {h['example']!r}")
        print(
            f"  recogniser (transcribe): {h['real_time']:.4f} s (wall, one thread) per second of audio "
            f"({1 / h['real_time']:.0f}x faster than real time; clips average {h['clip_seconds']:.2f} s)"
        )
    print(
        f"TTS (speech, seeded noise): {tts_seconds:.2f} s per clip; noise 0 (one session): {tts_quiet_seconds:.2f} s per clip"
    )


if __name__ == "__main__":
    main()
