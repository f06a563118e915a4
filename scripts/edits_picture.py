"""The README's editing picture: the shipped Shapes diffusion model recolouring and repainting
scenes of ``loom eval edits``, one column per task (the prompt above it), rows: the image given,
the mask given (none for image-to-image), what Loom made.

    .venv/bin/python scripts/edits_picture.py [--out docs/images/edits.png] [--tasks 0,1,2] [--seed 20261125]

Each task runs through ``loom.generate(prompt, seed, generator="diffusion", image=…, mask=…)``
with its own strength (a recolour's drawn strength, a repaint's default), item seed 0.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

CELL, LABEL_WIDTH, HEADER = 128, 80, 92
ROWS = ("image", "mask", "output")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images/edits.png")
    parser.add_argument("--tasks", default="0,1,2", help="which tasks of each kind")
    parser.add_argument("--seed", type=int, default=20261125, help="the tasks' seed (loom eval edits' default)")
    args = parser.parse_args()

    from PIL import Image, ImageDraw

    import loom
    from loom.plugins.shapes.edits import edit_tasks

    picks = [int(i) for i in args.tasks.split(",")]
    every = edit_tasks(max(picks) + 1, args.seed)
    tasks = [t for kind in ("recolour", "repaint") for t in [x for x in every if x.kind == kind][: max(picks) + 1]]
    tasks = [t for i, t in enumerate(tasks) if i % (max(picks) + 1) in picks]
    sheet = Image.new("RGB", (LABEL_WIDTH + CELL * len(tasks), HEADER + CELL * len(ROWS)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, name in enumerate(ROWS):
        draw.text((6, HEADER + row * CELL + CELL // 2 - 6), name, fill="black")
    for col, task in enumerate(tasks):
        x = LABEL_WIDTH + col * CELL
        note = f"{task.kind}, strength {task.strength:g}" if task.strength else f"{task.kind} (masked)"
        for j, line in enumerate(textwrap.wrap(f'{note}: "{task.prompt}"', CELL // 6)[:7]):
            draw.text((x + 4, 4 + 12 * j), line, fill="black")
        image = Image.fromarray(task.image())
        mask = None if task.mask() is None else Image.fromarray(task.mask()).convert("RGB")
        made = loom.generate(
            task.prompt,
            0,
            generator="diffusion",
            size=None,
            progress=False,
            image=image,
            mask=mask,
            strength=task.strength,
        )
        for row, picture in enumerate((image, mask, made.output.to_pil()[0])):
            if picture is not None:
                sheet.paste(picture.resize((CELL, CELL), Image.NEAREST), (x, HEADER + row * CELL))
            else:
                draw.text((x + CELL // 2 - 20, HEADER + row * CELL + CELL // 2 - 6), "(none)", fill="gray")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}: {len(tasks)} edits")


if __name__ == "__main__":
    main()
