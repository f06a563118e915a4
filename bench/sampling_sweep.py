"""ShapesEval of one trained folder under several sampling settings, on the same 100 fresh prompts.

    .venv/bin/python bench/sampling_sweep.py FAMILY FOLDER "{'guidance_scale': 2.0, 'temperature': 0.7}" ...

Each setting is a Python dict of the generator's config options; prompts are the evaluation
seed's (as ``loom eval shapes``), images seeded by position. Used to pick the AR defaults.
"""

import ast
import sys

from loom.core import Pipeline
from loom.evaluation import EVAL_SEED
from loom.plugins.shapes import ShapesEval, sample_prompts

family, folder = sys.argv[1], sys.argv[2]
pairs = sample_prompts(100, EVAL_SEED)
texts, targets = [c for c, _ in pairs], [s for _, s in pairs]
for options in [ast.literal_eval(a) for a in sys.argv[3:]]:
    p = Pipeline.from_spec({"steps": [{"component": "text-encoder"}, {"component": family, "config": {"weights": folder, **options}}]})
    images = []
    for s in range(0, len(texts), 32):
        chunk = texts[s : s + 32]
        images.extend(p.run(chunk, list(range(s, s + len(chunk))), progress=False).output.to_numpy())
    r = ShapesEval().evaluate_many(images, targets).to_dict()
    print(options, r["whole_prompt"], r["per_attribute"], flush=True)
