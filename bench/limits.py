"""Peak memory of a large image and of a long spoken prompt, before and after unpadded steps, in one run.

    .venv/bin/python bench/limits.py [--repeats 1] [--against REV] [--out bench/results/limits_<date>.txt]

Each case is a fresh process running `loom generate` and reporting its peak resident memory
(``ru_maxrss``) and wall time:

- ``--size 4096``: one 4096 × 4096 image, against the same chain at ``--size 256`` (the models and
  the runtime); the difference is the memory the image itself costs, shown against the image's own
  size (4096 × 4096 × 3 float32 = 192 MiB). Issue 32 asks it to stay within 1.5 × that.
- a 60-second spoken prompt (48 kHz stereo WAV: one spoken caption over and over), against a
  4-second one.

"before" is this tree with the steps that gained nothing from padding (resize, the spoken-prompt
encoder, the audio postprocessors) set back to the old fixed micro-batch of 8; ``--against REV``
runs commit REV's tree instead (laid out as bench/startup_and_generate.py does). Ratios are
after / before; below 1 is less. The report is printed and written to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE_BYTES = 4096 * 4096 * 3 * 4

#: Runs `loom generate` in this process and prints {"rss_mb", "seconds"}; argv[1] "before" puts
#: the old padding back first.
CASE = """
import json, resource, sys, time
if sys.argv[1] == "before":
    from loom.plugins import audio_postprocessors as audio, image_postprocessors as image, spoken
    for cls in (image.Resize, spoken.SpokenPrompt, audio.Resample, audio.Loudness, audio.TrimSilence, audio.Fade):
        cls.micro_batch = 8
from loom.cli import main
start = time.perf_counter()
try:
    main(["generate", *sys.argv[2:], "-q", "--seed", "1"], prog_name="loom")
except SystemExit as stop:
    if stop.code:
        raise
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - start}))
"""


def measure(mode: str, args: list[str], env: dict) -> dict:
    """Peak RSS (MiB) and seconds of one `loom generate` in a fresh process."""
    done = subprocess.run([sys.executable, "-c", CASE, mode, *args], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"loom generate {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_clip(path: Path, seconds: float) -> None:
    """A 48 kHz stereo WAV, ``seconds`` long: a Shapes caption spoken by the `speech` plugin, over
    and over (the spoken-prompt encoder refuses what it cannot hear as a caption)."""
    import numpy as np
    import soundfile
    import torchaudio

    from loom.core import Text, get_registry

    speech = get_registry().get("speech").cls().load()
    audio = speech(Text(["a large red circle in the center on a blue background"]), seed=0)
    said = torchaudio.functional.resample(audio.clip(0).mean(0), audio.sample_rate, 48000).numpy()
    said = np.concatenate([said, np.zeros(24000, np.float32)])  # the caption, then half a second's pause
    wave = np.tile(said, -(-int(48000 * seconds) // len(said)))[: int(48000 * seconds)]
    soundfile.write(path, np.stack([wave, wave], 1), 48000)


def cases(tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Each case: (the large request, the small one it is measured against)."""
    for seconds in (4, 60):
        write_clip(tmp / f"said-{seconds}s.wav", seconds)
    image = ["a red circle", "-o", str(tmp / "pic.png")]
    spoken = ["-o", str(tmp / "said.png"), "--prompt-audio"]
    return {
        "--size 4096": ([*image, "--size", "4096"], [*image, "--size", "256"]),
        "60 s spoken prompt": ([*spoken, str(tmp / "said-60s.wav")], [*spoken, str(tmp / "said-4s.wav")]),
    }


def trees(against: str | None, tmp: Path) -> dict[str, tuple[str, dict]]:
    """The two sides: name → (mode for CASE, environment)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if against is None:
        return {"before (micro_batch 8)": ("before", env), "after": ("after", env)}
    sys.path.insert(0, str(ROOT / "bench"))
    from startup_and_generate import layout

    (tmp / "rev").mkdir()
    return {against: ("after", {**env, "PYTHONPATH": str(layout(against, tmp / "rev"))}), "after": ("after", env)}


def run(repeats: int, against: str | None) -> list[str]:
    lines = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        sides = trees(against, tmp)
        for name, (large, small) in cases(tmp).items():
            peaks: dict[str, list[float]] = {side: [] for side in sides}
            extra: dict[str, list[float]] = {side: [] for side in sides}
            seconds: dict[str, list[float]] = {side: [] for side in sides}
            for _ in range(repeats):
                for side, (mode, env) in sides.items():  # interleaved, so drift hits both sides alike
                    big, base = measure(mode, large, env), measure(mode, small, env)
                    peaks[side].append(big["rss_mb"])
                    extra[side].append(big["rss_mb"] - base["rss_mb"])
                    seconds[side].append(big["seconds"])
            lines.append(f"{name}: peak RSS MiB (over the small request), seconds; medians of {repeats}")
            for side in sides:
                p, e, s = (statistics.median(x[side]) for x in (peaks, extra, seconds))
                note = f", {e * 2**20 / IMAGE_BYTES:.2f} × the image" if name.startswith("--size") else ""
                lines.append(f"  {side:24} {p:8.0f} MiB (+{e:.0f}{note})  {s:6.1f} s")
            before, after = list(sides)
            ratio = statistics.median(peaks[after]) / statistics.median(peaks[before])
            gain = statistics.median(extra[after]) / max(statistics.median(extra[before]), 1e-9)
            lines.append(f"  after / before: peak {ratio:.3f}, over the small request {gain:.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--against", default=None, help="compare with commit REV instead of micro_batch 8")
    parser.add_argument("--out", type=Path, default=None, help="report file (default bench/results/limits_DATE.txt)")
    args = parser.parse_args()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    lines = [
        f"bench/limits.py at {head.stdout.strip()} (+ working tree), {datetime.date.today()}, "
        f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}",
        *run(args.repeats, args.against),
    ]
    report = "\n".join(lines) + "\n"
    print(report, end="")
    out = args.out or ROOT / "bench" / "results" / f"limits_{datetime.date.today()}.txt"
    out.write_text(report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
