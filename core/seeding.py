"""Seeds: one per item, so an item's output does not depend on the batch it ran in."""

from __future__ import annotations

import secrets
from typing import Any, Sequence

from .errors import InputError

#: Seeds are kept to 63 bits so they fit every integer type they pass through (JSON, torch).
MAX_SEED = 2**63 - 1


def item_seeds(seed: Any, count: int) -> list[int]:
    """One seed per item. ``None`` draws a random base seed (recorded in provenance, so the run can be reproduced);
    an ``int`` gives item *i* ``seed + i``; a sequence gives each item its own; a ``torch.Generator`` draws them."""
    if seed is None:
        seed = secrets.randbelow(2**31)
    if isinstance(seed, int) and not isinstance(seed, bool):
        seeds = [seed + i for i in range(count)]
    elif type(seed).__name__ == "Generator" and hasattr(seed, "manual_seed"):
        import torch

        seeds = torch.randint(0, 2**62, (count,), generator=seed).tolist()
    elif isinstance(seed, Sequence) and not isinstance(seed, (str, bytes)):
        seeds = list(seed)
        if len(seeds) != count:
            raise InputError(f"got {len(seeds)} seeds for {count} inputs: give one seed per input, or one integer")
    else:
        raise InputError(f"seed must be an integer, a list of integers or a torch.Generator, got {seed!r}")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED:
            raise InputError(f"seed {s!r} is not an integer between 0 and 2**63-1")
    return seeds


def generators(seeds: Sequence[int], device: str = "cpu") -> list[Any]:
    """A ``torch.Generator`` per seed, on ``device``."""
    import torch

    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
