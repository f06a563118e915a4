"""The README's picture: each Shapes family's answer to a few prompts typed the way people type.

    .venv/bin/python scripts/everyday_grid.py [--out docs/images/everyday.png] [--families vae,gan,ar,diffusion] [--seeds 2]

One row per family (its shipped weights or a folder: ``--families vae,runs/vae6``; ``vae:as-typed``
is the vae on the prompts as typed, without its prompt completion), one column per (prompt,
seed); the prompts are written above their columns. Seeds 0..N-1, 64 px images shown at 2x so
the shapes read at a glance.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

#: Everyday prompts: some attributes unsaid, everyday words.
PROMPTS = (
    "a red circle on a blue background",
    "a white circle",
    "a big green triangle in the upper left corner",
    "something yellow on black",
    "a tiny box right in the middle of the picture",
    "an orange disc next to a purple square",
)
CELL, LABEL_WIDTH, HEADER = 128, 150, 56


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images/everyday.png")
    parser.add_argument("--families", default="vae,gan,ar,diffusion,vae:as-typed")
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()

    from PIL import Image, ImageDraw

    import loom

    families = args.families.split(",")
    columns = [(p, s) for p in PROMPTS for s in range(args.seeds)]
    sheet = Image.new("RGB", (LABEL_WIDTH + CELL * len(columns), HEADER + CELL * len(families)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, prompt in enumerate(PROMPTS):
        x = LABEL_WIDTH + k * args.seeds * CELL + 4
        for j, line in enumerate(textwrap.wrap(f'"{prompt}"', 2 * args.seeds * CELL // 7)[:4]):
            draw.text((x, 4 + 12 * j), line, fill="black")
    for row, family in enumerate(families):
        name, _, how = family.partition(":")
        typed = how == "as-typed"
        pipeline = loom.pipeline_for(loom.default_spec(name, size=None, complete=not typed))
        images = pipeline.run([p for p, _ in columns], seed=[s for _, s in columns], progress=False).output.to_pil()
        y = HEADER + row * CELL
        draw.text((6, y + CELL // 2 - 6), Path(name).name + (", as typed" if typed else ""), fill="black")
        for col, image in enumerate(images):
            sheet.paste(image.resize((CELL, CELL), Image.NEAREST), (LABEL_WIDTH + col * CELL, y))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}: {len(families)} families x {len(columns)} images")


if __name__ == "__main__":
    main()
