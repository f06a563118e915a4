"""Which prompts a Shapes generator gets wrong, and what is in them.

    .venv/bin/python bench/shapes_failures.py GENERATOR [-n 200]

Generates the evaluation prompts (as ``loom eval shapes``: the evaluation seed's prompts, image i
seeded i), prints each prompt ShapesEval rejects with its per-attribute verdicts and what was
detected, then counts: wrong prompts by number of objects, and how often each (shape, size) is
asked for in all prompts and in the wrong ones.
"""

import argparse
import collections

from loom.evaluation import EVAL_SEED, evaluate_shapes
from loom.plugins.shapes import sample_prompts

parser = argparse.ArgumentParser()
parser.add_argument("generator", help="a registered name or a trained folder")
parser.add_argument("-n", type=int, default=200)
args = parser.parse_args()
report = evaluate_shapes(args.generator, n=args.n, progress=False)
prompts, wrong = collections.Counter(), collections.Counter()
asked, asked_in_wrong = collections.Counter(), collections.Counter()
for score, (text, target) in zip(report.scores, sample_prompts(args.n, EVAL_SEED)):
    prompts[score.objects] += 1
    kinds = [(o.shape, o.size) for o in target.objects]
    asked.update(kinds)
    if not score.correct:
        wrong[score.objects] += 1
        asked_in_wrong.update(kinds)
        print(
            text,
            score.attributes,
            "detected:",
            [(d.get("shape"), d.get("size")) for d in score.detected if d.get("shape")],
        )
print(
    f"wrong: {sum(wrong.values())} of {sum(prompts.values())} prompts; by objects named: "
    + ", ".join(f"{k}: {wrong[k]} of {prompts[k]}" for k in sorted(prompts))
)
print("(shape, size): asked in all prompts / in wrong prompts")
for kind in sorted(asked):
    print(f"  {kind}: {asked[kind]} / {asked_in_wrong[kind]}")
