"""ShapesEval of one generator under several sampling settings, on the same fresh prompts.

    .venv/bin/python bench/sampling_sweep.py GENERATOR "{'guidance_scale': 2.0, 'temperature': 0.7}" ... [-n 100] [--seed 7] [--split templated|underspecified|both] [--as-typed]

GENERATOR is a registered name or a trained folder; each setting is a Python dict of its config
options. Every setting sees the same prompts and seeds (those of ``loom eval snapshots``: the
validation seed 7 unless ``--seed`` says otherwise; image i seeded i), so the comparison is paired,
and it also prints, against the first setting, how many prompts only one of the two got right.
``--as-typed``: without the generator's prompt completion.
Choose defaults on validation prompts: the evaluation seed's prompts (``--seed 20261125``, as the AR
defaults were picked with an earlier version of this script) are for reporting.
"""

import argparse
import ast

from loom.evaluation import SPLITS, VALIDATION_SEED, evaluate_shapes

parser = argparse.ArgumentParser()
parser.add_argument("generator", help="a registered name or a trained folder")
parser.add_argument("settings", nargs="+", help="Python dicts of config options")
parser.add_argument("-n", type=int, default=100)
parser.add_argument("--seed", type=int, default=VALIDATION_SEED)
parser.add_argument("--split", choices=(*SPLITS, "both"), default="both", help="which prompts (default: both splits)")
parser.add_argument("--as-typed", action="store_true", help="without the generator's prompt completion")
args = parser.parse_args()
first: dict = {}
for options in [ast.literal_eval(a) for a in args.settings]:
    for split in SPLITS if args.split == "both" else (args.split,):
        report = evaluate_shapes(
            args.generator,
            n=args.n,
            seed=args.seed,
            options=options,
            progress=False,
            split=split,
            complete=not args.as_typed,
        )
        right = [s.correct for s in report.scores]
        r = report.to_dict()
        line = f"{options} {split} {r['whole_prompt']:.3f} {r['per_attribute']}"
        if split not in first:
            first[split] = right
        else:
            base = first[split]
            line += f"; right only here: {sum(b and not a for a, b in zip(base, right))}, only with the first: {sum(a and not b for a, b in zip(base, right))}"
        print(line, flush=True)
