"""ShapesEval of one generator under several sampling settings, on the same 100 fresh prompts.

    .venv/bin/python bench/sampling_sweep.py GENERATOR "{'guidance_scale': 2.0, 'temperature': 0.7}" ...

GENERATOR is a registered name or a trained folder; each setting is a Python dict of its config
options. Prompts and seeds are those of ``loom eval shapes -n 100``. Used to pick the AR defaults.
"""

import ast
import sys

from loom.evaluation import evaluate_shapes

generator = sys.argv[1]
for options in [ast.literal_eval(a) for a in sys.argv[2:]]:
    r = evaluate_shapes(generator, n=100, options=options, progress=False).to_dict()
    print(options, r["whole_prompt"], r["per_attribute"], flush=True)
