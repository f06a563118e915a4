"""A plugin module that imports torch at import time, which the conformance kit must catch."""

import torch  # noqa: F401  (the point of this module: a heavy import at registration)
from conformance_fakes import Brighten

from loom.core import hookimpl


class EagerTorch(Brighten):
    pass


@hookimpl
def loom_register_components(register):
    register("eager", EagerTorch)
