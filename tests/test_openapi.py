"""The OpenAPI document: every API route is in it, and schemathesis fuzzes every operation
(valid and invalid input, as a listener and as an operator): no 500, every response matches
the document."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from webapp.openapi import openapi_document

FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same cases every run: a failure here is reproducible
    suppress_health_check=list(HealthCheck),
)


def test_every_api_route_is_in_the_document_and_nothing_else(app) -> None:
    document = openapi_document()
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    routes = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = rule.rule.removeprefix("/api/v1").replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((method, path))
    assert routes == documented


def test_every_operation_documents_its_errors(app) -> None:
    for path, item in openapi_document()["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "500" in responses and "429" in responses, (method, path)
            if operation.get("security") != []:
                assert "401" in responses, (method, path)


def _fuzz(app, token: str, path_parameters: dict[str, str], mode: GenerationMode) -> int:
    """Run schemathesis' cases of every operation; returns how many were checked."""
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        fixed = {
            name: value
            for name, value in path_parameters.items()
            if any(p.name == name for p in operation.path_parameters)
        }
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed or None)

        @given(case=strategy)
        @FUZZ
        def check(case: schemathesis.Case) -> None:
            nonlocal checked
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"})
            checked += 1

        try:
            check()
        except Unsatisfiable:
            # Negative mode on an operation without free inputs (health, or a path whose
            # only parameter the test fixed): there is nothing invalid to send.
            assert mode is GenerationMode.NEGATIVE
    return checked


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_fuzz_random_ids_as_a_listener(app, web_world, mode: GenerationMode) -> None:
    assert _fuzz(app, web_world.u1, {}, mode) > 100


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_fuzz_the_listeners_own_data(app, web_world, mode: GenerationMode) -> None:
    # Random ids mostly find nobody; these cases reach the listener's real data.
    assert _fuzz(app, web_world.u1, {"user_id": "u1", "track_id": "t07"}, mode) > 100


def test_fuzz_as_an_operator(app, web_world) -> None:
    ids = {"user_id": "u2", "track_id": "t40"}
    assert _fuzz(app, web_world.operator, ids, GenerationMode.POSITIVE) > 100
