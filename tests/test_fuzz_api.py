"""The API fuzzed from its own OpenAPI document (schemathesis): whatever a
caller sends within or beside the schema, the gateway never answers 5xx, and
every refusal has the SPEC's error shape and an X-Request-ID.

The gateway runs as its own process with the embedded simulator
(`live_gateway_url`), so that schemathesis's blocking client and the gateway
never share an event loop.
The number of examples is bounded so the suite stays quick; set
FUZZ_EXAMPLES to go further.
"""

from __future__ import annotations

import os

import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from gateway.api import openapi

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
ERROR_FIELDS = {"code", "message", "request_id", "retryable", "chert_code"}


SCHEMA = schemathesis.openapi.from_dict(openapi.build())
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}
# Negative cases break a parameter or a body; an operation with neither has none.
CASES = [
    pytest.param(label, mode, id=f"{label} {mode.value}")
    for label, op in OPERATIONS.items()
    for mode in schemathesis.GenerationMode
    if mode is schemathesis.GenerationMode.POSITIVE
    or op.definition.raw.get("parameters")
    or op.definition.raw.get("requestBody")
]


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_no_input_gets_a_5xx_and_every_refusal_is_the_error_shape(
    live_gateway_url: str, label: str, mode: schemathesis.GenerationMode
) -> None:
    """Cases within the schema (positive) and just outside it (negative)."""
    session = requests.Session()

    @given(case=OPERATIONS[label].as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def call(case: schemathesis.Case) -> None:
        response = case.call(base_url=live_gateway_url, session=session, timeout=30)
        assert response.status_code < 500, (response.status_code, response.text[:500])
        # schemathesis keeps headers lower-cased, each a list of values.
        (request_id,) = response.headers["x-request-id"]
        if response.status_code >= 400 and case.method != "HEAD":  # HEAD answers have no body
            error = orjson.loads(response.content)["error"]
            assert set(error) == ERROR_FIELDS
            assert error["request_id"] == request_id

    try:
        call()
    finally:
        session.close()
