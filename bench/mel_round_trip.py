"""How much of a Sounds clip survives log-mel → waveform: SoundsEval on ground-truth clips after
``MelCodec.encode`` then ``decode`` (InverseMelScale + Griffin-Lim), for several mel settings.

    .venv/bin/python bench/mel_round_trip.py [-n 200] [--settings JSON] [--blur BINS] [--json FILE]

The score bounds what a generator predicting these spectrograms can reach. ``--settings`` is a
JSON list of MelSettings overrides (default: a small grid around the defaults); ``--blur`` also
blurs each spectrogram with a Gaussian of that many bins (in time and in frequency) before
decoding, a crude stand-in for a model's blurry predictions. Prints a Markdown table: the
settings, the spectrogram's shape, decode time per clip (CPU seconds, this process's threads),
and SoundsEval per attribute and whole caption, with chance beside.
"""

from __future__ import annotations

import argparse
import json
import time

DEFAULT_GRID = [
    {},
    {"griffin_lim_iterations": 16},
    {"griffin_lim_iterations": 64},
    {"n_mels": 80, "hop_length": 160},
    {"n_mels": 128, "hop_length": 128},
    {"n_mels": 32},
]


def blur(mel, bins: float):
    import torch

    if bins <= 0:
        return mel
    radius = int(3 * bins)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / bins) ** 2)
    k = k / k.sum()
    b, f, t = mel.shape
    out = torch.nn.functional.conv1d(mel.reshape(b * f, 1, t), k.view(1, 1, -1), padding=radius).reshape(b, f, t)
    out = out.transpose(1, 2).reshape(b * t, 1, f)
    out = torch.nn.functional.conv1d(out, k.view(1, 1, -1), padding=radius).reshape(b, t, f).transpose(1, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="ground-truth clips (fresh evaluation prompts)")
    parser.add_argument("--settings", default=None, help="JSON list of MelSettings overrides")
    parser.add_argument("--blur", type=float, default=0.0, help="Gaussian blur of the spectrogram, in bins")
    parser.add_argument("--seed", type=int, default=20261125, help="seed of the prompts and renders")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()

    import numpy as np
    import torch

    from loom.plugins.common.mel import MelCodec, MelSettings
    from loom.plugins.sounds import ATTRIBUTES, SAMPLE_RATE, SoundsEval, render, sample_prompts

    pairs = sample_prompts(args.n, args.seed)
    rng = np.random.default_rng(args.seed)
    clips = torch.from_numpy(np.stack([render(sound, SAMPLE_RATE, rng) for _, sound in pairs]))
    captions = [c for c, _ in pairs]
    grid = json.loads(args.settings) if args.settings else DEFAULT_GRID
    evaluator = SoundsEval()
    truth = evaluator.evaluate_many(list(clips.numpy()), captions, SAMPLE_RATE)
    rows = [{"settings": "ground truth (no round trip)", "shape": "", "decode_s": None, **truth.to_dict()}]
    for overrides in grid:
        settings = MelSettings(**overrides)
        codec = MelCodec(settings)
        decoded = []
        start = time.process_time()
        for i in range(0, len(clips), 25):
            mel = blur(codec.encode(clips[i : i + 25]), args.blur)
            decoded.append(codec.decode(mel, length=clips.shape[-1]))
        seconds = (time.process_time() - start) / len(clips)
        report = evaluator.evaluate_many(list(torch.cat(decoded).numpy()), captions, settings.sample_rate)
        shown = {
            k: v
            for k, v in settings.model_dump().items()
            if k in ("sample_rate", "n_mels", "hop_length", "griffin_lim_iterations")
        }
        rows.append(
            {
                "settings": json.dumps(shown),
                "shape": f"{settings.n_mels}×{tuple(mel.shape)[-1]}",
                "decode_s": seconds,
                **report.to_dict(),
            }
        )
        print(f"done: {shown}", flush=True)

    chance = truth.chance
    head = "| settings | mel shape | decode CPU s/clip | " + " | ".join(ATTRIBUTES) + " | whole caption |"
    print(f"\nSoundsEval on {args.n} clips" + (f", spectrogram blurred by {args.blur} bins" if args.blur else ""))
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        t = f"{r['decode_s']:.3f}" if r["decode_s"] is not None else ""
        cells = " | ".join(f"{r['per_attribute'][a]:.3f}" for a in ATTRIBUTES)
        print(f"| {r['settings']} | {r['shape']} | {t} | {cells} | {r['whole_prompt']:.3f} |")
    print("| chance | | | " + " | ".join(f"{chance[a]:.3f}" for a in ATTRIBUTES) + f" | {chance['whole_prompt']:.4f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
