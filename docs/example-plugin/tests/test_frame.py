"""The plugin's tests: Loom's conformance kit (one test per check of the component contract),
then what is particular to this plugin."""

import loom_example_plugin
import torch
from loom_example_plugin import Frame

from loom.core import Image
from loom.testing import conformance_tests

test_conformance = conformance_tests(loom_example_plugin, configs={"frame": {"width": 2}})


def test_frame_paints_the_border_only():
    out = Frame(width=2, colour="black")(Image(torch.ones(1, 3, 8, 8)), seed=0).pixels
    assert (out[0, :, :2] == 0).all() and (out[0, :, 2:-2, 2:-2] == 1).all()
