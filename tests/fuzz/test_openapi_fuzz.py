"""schemathesis against the service's own `/openapi.json` (tests/fuzz/conftest.py's service:
two fast fake models, which carry the model names of the document's examples).

For every documented operation — except the endless streams (`/api/events`,
`/logs/stream*`) — schemathesis sends the document's examples, its coverage cases
(boundary and invalid values) and generated requests, and checks each answer:

- `not_a_server_error`, for the service's own answers: a 5xx relayed from an upstream (the
  fake upstreams mark theirs with `X-Upstream-Name`) is that upstream's, not a finding;
- conformance to the document — documented status code, content type, response headers
  and response schema — also for the service's own answers: what an upstream says is the
  upstream's business (the document describes those bodies, it does not promise them).
"""

from __future__ import annotations

import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from llama_swap import __version__
from llama_swap.server.docs import openapi_document
from tests.fuzz.support import ENDLESS_PREFIXES, fuzz
from tests.integration.conftest import RunningService

EXAMPLES_PER_OPERATION = 8


def _own(check):  # type: ignore[no-untyped-def]
    """``check``, applied only to answers the service produced itself."""

    def own(ctx, response, case):  # type: ignore[no-untyped-def]
        if "x-upstream-name" in response.headers:
            return None
        return check(ctx, response, case)

    own.__name__ = f"{check.__name__}_of_its_own"
    return own


CHECKS = [
    _own(not_a_server_error),
    _own(status_code_conformance),
    _own(content_type_conformance),
    _own(response_headers_conformance),
    _own(response_schema_conformance),
]


# The document the service serves at /openapi.json (`test_the_fuzzed_document_is_the_served_one`
# checks they are the same): loaded when the tests are collected, since schemathesis makes
# one test per operation then — before any service runs. (Its lazy `from_fixture` loader,
# which could fetch the document from the running service, does not work with pytest 9.)
DOCUMENT = openapi_document(__version__)
CONFIG = schemathesis.Config.from_dict({
    "request-timeout": 30,
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
               "stateful": {"enabled": False}},
    "generation": {"mode": "all"},
})
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG).exclude(
    path_regex="^(" + "|".join(ENDLESS_PREFIXES) + ")"
)


def test_the_fuzzed_document_is_the_served_one(svc: RunningService) -> None:
    assert svc.http.get("/openapi.json").json() == DOCUMENT


@fuzz(EXAMPLES_PER_OPERATION)
@schema.parametrize()
def test_every_documented_operation(case: schemathesis.Case, svc: RunningService) -> None:
    case.call_and_validate(base_url=svc.url, checks=CHECKS)
