"""Which prompts a Shapes generator gets wrong, and what is in them.

    .venv/bin/python bench/shapes_failures.py FAMILY [FOLDER] [-n 200]

Generates the evaluation prompts (as ``loom eval shapes``: the evaluation seed's prompts, image i
seeded i), prints each prompt ShapesEval rejects with its per-attribute verdicts and what was
detected, then counts: wrong prompts by number of objects, and how often each (shape, size) is
asked for in all prompts and in the wrong ones.
"""

import argparse
import collections

from loom.core import Pipeline
from loom.evaluation import EVAL_SEED
from loom.plugins.shapes import ShapesEval, sample_prompts

parser = argparse.ArgumentParser()
parser.add_argument("family")
parser.add_argument("folder", nargs="?")
parser.add_argument("-n", type=int, default=200)
args = parser.parse_args()
pairs = sample_prompts(args.n, EVAL_SEED)
texts, targets = [c for c, _ in pairs], [s for _, s in pairs]
config = {"weights": args.folder} if args.folder else {}
chain = Pipeline.from_spec({"steps": [{"component": "text-encoder"}, {"component": args.family, "config": config}]})
images = []
for start in range(0, len(texts), 50):
    chunk = texts[start : start + 50]
    images.extend(chain.run(chunk, list(range(start, start + len(chunk))), progress=False).output.to_numpy())
evaluator = ShapesEval()
prompts, wrong = collections.Counter(), collections.Counter()
asked, asked_in_wrong = collections.Counter(), collections.Counter()
for image, target, text in zip(images, targets, texts):
    score = evaluator.evaluate(image, target)
    prompts[score.objects] += 1
    kinds = [(o.shape, o.size) for o in target.objects]
    asked.update(kinds)
    if not score.correct:
        wrong[score.objects] += 1
        asked_in_wrong.update(kinds)
        print(text, score.attributes, "detected:", [(d.get("shape"), d.get("size")) for d in score.detected if d.get("shape")])
print(f"wrong: {sum(wrong.values())} of {sum(prompts.values())} prompts; by objects named: "
      + ", ".join(f"{k}: {wrong[k]} of {prompts[k]}" for k in sorted(prompts)))
print("(shape, size): asked in all prompts / in wrong prompts")
for kind in sorted(asked):
    print(f"  {kind}: {asked[kind]} / {asked_in_wrong[kind]}")
