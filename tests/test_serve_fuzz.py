"""`loom serve` against requests schemathesis makes from its own OpenAPI schema: none may get a 5xx.

Bounded: a few examples per operation (LOOM_FUZZ_EXAMPLES, default 12), on a server this module starts on 127.0.0.1
with a small queue and stops. Webhooks are left out of the bodies (a fuzzed URL would be a call to some other host).
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("httpx")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from loom.testing.server import LoomServer  # noqa: E402

EXAMPLES = int(os.environ.get("LOOM_FUZZ_EXAMPLES", "12"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with LoomServer(tmp_path_factory.mktemp("fuzz") / "data", "--queue-limit", "3") as server:
        yield schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def test_no_request_gets_a_server_error(api):
    # schemathesis's own pytest integration needs pytest < 9.2 (it sets Item._nodeid): its strategies are driven here
    from hypothesis import given

    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) == 7, "the schema lists not the 7 operations loom serve has under /v1"
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def call(case):
            if isinstance(case.body, dict):
                case.body.pop("webhook", None)
            case.call_and_validate(checks=[not_a_server_error], timeout=120)  # a /v1/generate waits for its image

        call()
