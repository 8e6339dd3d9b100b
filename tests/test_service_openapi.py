"""The OpenAPI schema describes every answer: each route declares its success answer with a schema that says
what is in it (no untyped ``{}`` or bare ``object``), its errors are the service's one error shape
(``ErrorBody``, never FastAPI's ``HTTPValidationError``, which the service does not send), and routes that
answer bytes or streams say which media type. The fuzz test (``test_service_fuzz.py``) then checks real
answers against this schema. The schema is read from an app that is built but not started."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")

from conftest_service import service_settings

API = "/api/v1"

#: routes that answer bytes or a stream, and the media type they declare
BINARY_ROUTES = {
    ("get", f"{API}/metrics"): "text/plain",
    ("get", f"{API}/stream"): "text/event-stream",
    ("get", f"{API}/cameras/{{name}}/latest.jpg"): "image/jpeg",
    ("get", f"{API}/cameras/{{name}}/live.mjpeg"): "multipart/x-mixed-replace; boundary=frame",
    ("get", f"{API}/events/{{key}}/snapshot"): "image/jpeg",
    ("get", f"{API}/events/export.csv"): "text/csv",
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> dict[str, Any]:
    from fakes import fake_detector

    from maskwatch.service.app import create_app

    app = create_app(service_settings(tmp_path_factory.mktemp("openapi")), detector=fake_detector())
    return app.openapi()


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def untyped(schema: dict[str, Any] | None, spec: dict[str, Any]) -> bool:
    """True when a schema says nothing about the answer: missing, ``{}``, an object without properties
    (``dict``), or a list, union or reference of such."""
    if not schema:
        return True
    schema = _resolve(schema, spec)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return any(untyped(s, spec) for s in schema[key])
    kind = schema.get("type")
    if kind == "array":
        return untyped(schema.get("items"), spec)
    if kind == "object" or (kind is None and "properties" not in schema):
        return not schema.get("properties")
    return False


def test_untyped_detects_what_fastapi_writes_for_dict_and_nothing():
    spec = {"components": {"schemas": {"M": {"type": "object", "properties": {"a": {"type": "integer"}}}}}}
    assert untyped(None, spec) and untyped({}, spec)
    assert untyped({"type": "object", "additionalProperties": True, "title": "Response X"}, spec)  # -> dict
    assert untyped({"type": "array", "items": {"type": "object", "additionalProperties": True}}, spec)
    assert not untyped({"$ref": "#/components/schemas/M"}, spec)
    assert not untyped({"type": "array", "items": {"$ref": "#/components/schemas/M"}}, spec)
    assert untyped({"anyOf": [{"$ref": "#/components/schemas/M"}, {}]}, spec)


def test_every_json_answer_has_a_typed_schema(spec):
    problems = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            successes = [code for code in responses if code.startswith("2")]
            if not successes:
                problems.append(f"{where}: no success answer declared")
            for code in successes:
                content = responses[code].get("content")
                if code == "204":
                    continue
                if not content:
                    problems.append(f"{where} {code}: no content declared")
                    continue
                for media, body in content.items():
                    if "json" in media and untyped(body.get("schema"), spec):
                        problems.append(f"{where} {code} {media}: untyped schema {body.get('schema')}")
            if (method, path) in BINARY_ROUTES:
                assert BINARY_ROUTES[(method, path)] in responses["200"]["content"], where
                assert "application/json" not in responses["200"]["content"], where
    assert not problems, "\n".join(problems)


def test_errors_are_documented_as_the_one_error_shape(spec):
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # the service never answers that shape
    error = spec["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"status", "error", "detail"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            for code in ("4XX", "5XX"):
                body = responses.get(code, {}).get("content", {}).get("application/json", {})
                assert body.get("schema") == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)
            for code, response in responses.items():
                if code.startswith(("4", "5")) and code not in ("4XX", "5XX") and path != f"{API}/readyz":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)


def test_answers_that_vary_say_so(spec):
    """``/stats/compliance`` answers points, columns or CSV; ``/readyz`` answers its checks with 200 or 503."""
    compliance = spec["paths"][f"{API}/stats/compliance"]["get"]["responses"]["200"]["content"]
    refs = {s["$ref"].rsplit("/", 1)[-1] for s in compliance["application/json"]["schema"]["anyOf"]}
    assert refs == {"CompliancePoints", "ComplianceColumns"} and "text/csv" in compliance
    ready = spec["paths"][f"{API}/readyz"]["get"]["responses"]
    schemas = [ready[code]["content"]["application/json"]["schema"] for code in ("200", "503")]
    assert schemas[0] == schemas[1] == {"$ref": "#/components/schemas/Readiness"}
