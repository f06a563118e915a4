"""The exploration behind the Shapes diffusion model's edit method (docs/diffusion.md, "Editing with the
Shapes model"): recolour tasks of ``loom eval edits`` (seed 0, the first ``-n``), scored by ShapesEval's
whole-prompt verdict, under settings ``bench/shapes_edit_sweep.py`` does not sweep.

- ``options``: the ``diffusion`` step run with each given option set (JSON), e.g. SDEdit at higher guidance::

      python bench/shapes_edit_explore.py options '{"edit": "sdedit", "strength": 0.7, "guidance_scale": 5}'

- ``region``: DiffEdit's region found by hand, for thresholds and growths the component fixes
  (``CHANGED_SHARE``, one latent), and repainted at a strength below 1 or another guidance; each
  setting is ``LEVEL,THRESHOLD,GROW,STRENGTH,GUIDANCE``::

      python bench/shapes_edit_explore.py region 0.7,0.3,1,1.0,2 0.7,0.2,1,1.0,2 0.7,0.5,1,1.0,2 0.7,0.3,1,0.87,5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).parent))
from shapes_edit_sweep import as_image, score  # noqa: E402

import loom  # noqa: E402
from loom.plugins.shapes.edits import edit_tasks  # noqa: E402


def to_arrays(pixels) -> list:
    return list((pixels.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy())


def run_options(tasks, image, settings) -> None:
    prompts = [t.prompt for t in tasks]
    for text in settings:
        pipeline = loom.Pipeline.from_steps("text-encoder", ("diffusion", json.loads(text)))
        result = pipeline.run(prompts, seed=0, image=image, progress=False)
        print(f"{text}: {score(to_arrays(result.output.pixels), tasks):.3f}", flush=True)


def run_regions(tasks, image, settings, samples: int = 4) -> None:
    from loom.plugins.diffusion.shapes import _guided, noise_schedule

    prompts = [t.prompt for t in tasks]
    emb = loom.Pipeline.from_steps("text-encoder").run(prompts, seed=0, progress=False).output
    pipeline = loom.Pipeline.from_steps("text-encoder", "diffusion").load()
    model = pipeline.components[1].model
    schedule, condition = noise_schedule(model.cfg), _guided(emb.tokens, emb.mask, emb.pooled)
    with torch.no_grad():
        known = model.fold(image.pixels)
    for text in settings:
        level, threshold, grow, strength, guidance = (float(x) for x in text.split(","))
        differ = 0
        with torch.no_grad():
            for k in range(samples):
                noise = torch.randn(known.shape, generator=torch.Generator().manual_seed(k))
                t = torch.full((known.shape[0],), int(level * 1000) - 1)
                x = schedule.add_noise(known, noise, t)
                uncond, cond = model(torch.cat([x, x]), torch.cat([t, t]), *condition).chunk(2)
                differ = differ + (cond - uncond).abs().mean(1, keepdim=True)
        region = (differ / differ.amax((-2, -1), keepdim=True) > threshold).float()
        region = F.max_pool2d(region, 2 * int(grow) + 1, 1, int(grow))
        region = F.interpolate(region, size=model.cfg.image_size, mode="nearest")
        gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
        with torch.no_grad():
            px = model.generate(
                emb.tokens, emb.mask, emb.pooled, gens, image=image.pixels, repaint=region,
                strength=strength, guidance_scale=guidance,
            )  # fmt: skip
        print(f"{text}: {score(to_arrays(px), tasks):.3f} (region {float(region.mean()):.3f} of the image)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["options", "region"])
    parser.add_argument("settings", nargs="+")
    parser.add_argument("-n", type=int, default=40, help="recolour tasks (the first n of seed 0)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    np.random.seed(0)
    tasks = [t for t in edit_tasks(args.n, 0) if t.kind == "recolour"]
    image = as_image([t.image() for t in tasks])
    (run_options if args.mode == "options" else run_regions)(tasks, image, args.settings)


if __name__ == "__main__":
    main()
