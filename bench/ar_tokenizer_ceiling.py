"""What the AR family's tokenizer alone can reach: ShapesEval on its reconstructions of real images.

    .venv/bin/python bench/ar_tokenizer_ceiling.py [FOLDER]   # default: the shipped AR weights

Encodes 200 ground-truth Shapes images (dataset seed 99) to tokens and decodes them back; no
transformer sampling can score above this, so it bounds the AR family's ShapesEval.

Measured (whole prompt): 8×8 tokens, plain squared error, 800 steps: 0.205; 8×8 with
``edge_weight`` 20, 1,000 steps (``runs/ar4/snapshots/step-001000``): 0.405; 16×16
(``-O vq_channels=[16,32,64]``) after 900 steps: 0.485 with ``-O edge_weight=0``, 0.915 with 20
(``loom train ar --out OUT --steps 950 --seed 0 -O vq_channels=[16,32,64] -O tokenizer_fraction=0.95``;
rerun as ``runs/ar9``, the tokenizer the shipped AR keeps, on 2 threads: 0.935, colour 0.99, shape 0.94).
A 4,096-entry codebook at 8×8 (``loom train ar --out OUT --steps 1000 --seed 0 -O codebook=4096
-O tokenizer_fraction=0.9``, 900 tokenizer steps): 0.415, shape 0.425. The shipped 1,024-entry
codebook has every entry in use, but its size is not what bounds the 8×8 grid: the grid is.
"""

import sys

import numpy as np
import torch

from loom.plugins.ar import ARGenerator
from loom.plugins.ar import model as M
from loom.plugins.shapes import ShapesDataset, ShapesEval

folder = sys.argv[1] if len(sys.argv) > 1 else ARGenerator.default_weights
m = M.load(folder).float()
x, caps = ShapesDataset(seed=99).arrays(0, 200)
with torch.no_grad():
    rec = m.tokenizer.decode(m.tokenizer.encode(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255))
imgs = (rec.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
print(ShapesEval().evaluate_many(list(imgs), caps).to_dict())
