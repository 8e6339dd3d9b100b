"""Property-based fuzzing of the API against its own OpenAPI schema (schemathesis, bounded): no request,
however odd, gets a 5xx, and every answer conforms to the schema: its status code and media type are
documented, and a JSON body validates against the documented schema (success answers and errors alike).
Runs in-process (ASGI) on fake models, with an admin token."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (test extra)")
pytest.importorskip("edgefirst.tracker", reason="tracking needs the video extra")

from conftest_service import ADMIN, running_service  # noqa: E402

pytestmark = pytest.mark.slow
# endless streams; logging out is not fuzz material; a test-fire posts to the rule's webhook URL (the network)
SKIP = ("/stream", "/live.mjpeg", "/auth/logout", "/test")


def test_no_5xx_and_every_answer_conforms_to_the_schema(tmp_path):
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    with running_service(tmp_path, limits={"rate_per_minute": 1e6, "rate_burst": 100000}) as (client, _):
        schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", client.app)
        failures: list[str] = []
        ops = [op for op in schema.get_all_operations() if not op.ok().path.endswith(SKIP)]
        assert len(ops) > 25
        answered: set[str] = set()

        def check(case):
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {ADMIN}"}
            response = case.call()
            answered.add(f"{case.method} {case.path} {response.status_code // 100}xx")
            try:
                case.validate_response(response, checks=checks)
            except (AssertionError, BaseExceptionGroup) as exc:  # a check failed: which answer, to what
                failures.append(f"{case.method} {case.path} -> {response.status_code}: {str(exc)[:600]}\n"
                                f"  <- {case.path_parameters} {case.query} {case.body!r:.200}")

        for result in ops:
            strategy = result.ok().as_strategy()
            run = settings(max_examples=12, deadline=None, database=None, derandomize=True,
                           suppress_health_check=list(HealthCheck))(given(case=strategy)(check))  # fmt: skip
            run()
        assert not failures, "\n".join(failures[:20])
        assert sum(a.endswith("2xx") for a in answered) >= 15, sorted(answered)  # success answers were checked too
