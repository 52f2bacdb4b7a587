"""The OpenAPI document of the protocol declares what the service answers."""

from __future__ import annotations

from hqs_sdk.wire import ROUTES, openapi_document


def test_every_json_body_route_declares_415_and_no_other_does() -> None:
    paths = openapi_document()["paths"]
    with_json_body = set()
    for route in ROUTES:
        operation = paths[route.path][route.method.lower()]
        content = operation.get("requestBody", {}).get("content", {})
        declared = "415" in operation["responses"]
        if "application/json" in content:
            with_json_body.add(route.name)
            assert declared, route.name
            problem = operation["responses"]["415"]["content"]["application/json"]["schema"]
            assert problem == {"$ref": "#/components/schemas/Problem"}
        else:
            assert not declared, route.name  # uploads stream bytes; GETs have no body
    assert {"submit", "states"} <= with_json_body
