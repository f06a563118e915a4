"""How well the Shapes diffusion model edits (issue 33, part 4), to choose its edit defaults.

The tasks are ``loom eval edits``'s (``loom.plugins.shapes.edits.edit_tasks``, ``--seed``), scored
the same way (ShapesEval's whole-prompt verdict; keep: mean change outside the mask grown by a
margin ≤ 2/255), swept over settings:

- recolour: at each ``--strengths`` value, and at each task's own drawn strength (``task``).
- repaint (and keep): at each ``--repaint-strengths`` value.

It also scores the unedited input against each edited caption (what doing nothing gets) and
text-to-image on the same captions (the model without the image). Everything runs at 64×64 (no
resize step) through the ``text-encoder`` → ``diffusion`` chain, item i seeded ``i``; ``--edit``
picks the image-to-image method (the component's ``edit`` option).

    python bench/shapes_edit_sweep.py -n 100 --strengths 0.6 0.7 0.8 --repaint-strengths 1.0 [--edit sdedit]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import loom
from loom.core import Image
from loom.plugins.shapes.edits import KEEP_TOLERANCE, change_outside, edit_tasks
from loom.plugins.shapes.evaluate import ShapesEval


def as_image(arrays) -> Image:
    return Image(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255)


def masks_image(tasks) -> Image:
    masks = torch.from_numpy(np.stack([t.mask() for t in tasks])).float() / 255
    return Image(masks[:, None].expand(-1, 3, -1, -1).contiguous())


def score(outputs, tasks) -> float:
    ev = ShapesEval()
    return float(np.mean([ev.evaluate(o, t.prompt).correct for o, t in zip(outputs, tasks)]))


def keep(outputs, tasks) -> float:
    return float(np.mean([change_outside(t, o) <= KEEP_TOLERANCE for o, t in zip(outputs, tasks)]))


#: The diffusion step's options besides strength (``--edit`` sets the method).
OPTIONS: dict = {}


def run(tasks, strength=None, masked=False, edit=True):
    """Outputs (64×64×3 uint8) for ``tasks``, and the seconds taken."""
    start = time.perf_counter()
    request, options = {}, dict(OPTIONS)
    if edit:
        request["image"] = as_image([t.image() for t in tasks])
        options["strength"] = strength
        if masked:
            request["mask"] = masks_image(tasks)
    pipeline = loom.Pipeline.from_steps("text-encoder", ("diffusion", options))
    result = pipeline.run([t.prompt for t in tasks], seed=0, progress=False, **request)
    px = (result.output.pixels.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    return list(px), time.perf_counter() - start


def baselines(name, tasks) -> None:
    inputs = [t.image() for t in tasks]
    print(f"{name}, {len(tasks)} tasks: the input itself scores {score(inputs, tasks):.3f}")
    print(f"  text-to-image on the edited captions: {score(run(tasks, edit=False)[0], tasks):.3f}")


def recolour(tasks, strengths) -> None:
    print(f"recolour, {len(tasks)} tasks")
    for strength in strengths:
        outputs, took = run(tasks, strength)
        print(f"  strength {strength}: {score(outputs, tasks):.3f} ({took:.0f} s)")
    by_strength: dict = {}
    for i, t in enumerate(tasks):
        by_strength.setdefault(t.strength, []).append(i)
    outputs = [None] * len(tasks)
    for strength, idx in by_strength.items():
        for i, out in zip(idx, run([tasks[i] for i in idx], strength)[0]):
            outputs[i] = out
    print(f"  each task's own strength: {score(outputs, tasks):.3f}")


def repaint(tasks, strengths) -> None:
    print(f"repaint, {len(tasks)} tasks")
    for strength in strengths:
        outputs, took = run(tasks, strength, masked=True)
        print(
            f"  strength {strength}: repaint {score(outputs, tasks):.3f}, keep {keep(outputs, tasks):.3f} ({took:.0f} s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strengths", type=float, nargs="*", default=[0.6, 0.7, 0.8])
    parser.add_argument("--repaint-strengths", type=float, nargs="*", default=[1.0])
    parser.add_argument("--baselines", action="store_true", help="also the unedited input and text-to-image")
    parser.add_argument("--edit", choices=["diffedit", "sdedit"], default="diffedit", help="image-to-image method")
    args = parser.parse_args()
    OPTIONS["edit"] = args.edit
    tasks = edit_tasks(args.n, args.seed)
    if args.baselines:
        for kind in ("recolour", "repaint"):
            baselines(kind, [t for t in tasks if t.kind == kind])
    recolour([t for t in tasks if t.kind == "recolour"], args.strengths)
    repaint([t for t in tasks if t.kind == "repaint"], args.repaint_strengths)


if __name__ == "__main__":
    main()
