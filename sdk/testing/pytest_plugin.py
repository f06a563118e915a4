"""Loom's pytest plugin (entry point ``pytest11``). Installed with Loom, it is loaded by every
pytest run, so it imports nothing heavy and does nothing until a test asks for it:

- the fixture ``loom_check``: :func:`loom.testing.check_component`, for tests of your own;
- after a run that included conformance items (:func:`loom.testing.conformance_tests`), a
  summary line of how many checks passed, failed and were skipped, so that a green run that
  skipped most checks cannot pass for a thorough one.
"""

from __future__ import annotations

import sys

import pytest


@pytest.fixture
def loom_check():
    """:func:`loom.testing.check_component`: ``loom_check(MyComponent, config).raise_for_failures()``."""
    from loom.testing import check_component

    return check_component


def pytest_terminal_summary(terminalreporter):
    checks = sys.modules.get("loom.testing.checks")
    results = getattr(checks, "PYTEST_RESULTS", None)
    if not results:
        return
    from loom.testing.checks import Report

    report = Report(list(results))
    c = report.counts
    components = len({r.component for r in results if r.check != "registers"})
    terminalreporter.write_line(
        f"loom conformance: {components} component(s), {len(results)} checks: "
        f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"
    )
