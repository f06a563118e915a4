"""loom.testing: the conformance kit a plugin author runs in their own tests.

One call gives one pytest item per (component, check)::

    # tests/test_conformance.py of your plugin
    from loom.testing import conformance_tests

    test_conformance = conformance_tests("my_plugin")          # module name or entry-point name

The same checks run without pytest and return a :class:`Report` (passed / failed / skipped with
the reason, and how many ran)::

    from loom.testing import check_component, check_plugin

    report = check_plugin("my_plugin")
    print(report)                 # "loom conformance: 1 component(s), 16 checks: 15 passed, ..."
    report.raise_for_failures()

A step that takes named inputs (``takes``, e.g. an image to edit) is called with small examples
of each, or with those a test gives (``given={"repaint": {"image": images}}``). Which checks
apply follows from each component's :class:`loom.core.Capabilities`; a component that takes LoRA
adapters (:class:`loom.core.AdapterOptions`) is also checked with an adapter file the test gives
(``adapters={"my-generator": "lora.safetensors"}``). Importing
this module imports no torch; the checks import it when they call components.
"""

from .checks import (
    ADAPTERS_CHECK,
    CHECKS,
    EXAMPLE_ENCODER,
    EXAMPLE_TEXT_DIM,
    CheckResult,
    ConformanceError,
    Report,
    check_component,
    check_plugin,
    conformance_tests,
    example_given,
    example_inputs,
)

__all__ = [
    "ADAPTERS_CHECK",
    "CHECKS",
    "EXAMPLE_ENCODER",
    "EXAMPLE_TEXT_DIM",
    "CheckResult",
    "ConformanceError",
    "Report",
    "check_component",
    "check_plugin",
    "conformance_tests",
    "example_given",
    "example_inputs",
]
