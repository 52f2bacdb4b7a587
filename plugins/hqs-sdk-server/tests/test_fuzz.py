"""The API under a fuzzer: schemathesis sends generated requests to a real service on SQLite.

For every operation of the OpenAPI document, with a valid bearer token: no response is a 5xx,
each one is declared by the document (status code, content type, body schema), and requests
that break the document are refused. Without a token, or with a wrong or revoked one: every
operation that needs a token answers 401, and nothing answers 5xx.

The run is bounded and repeatable: a fixed number of generated cases per operation (plus
schemathesis' example and coverage cases), derandomized, with no example database.

The schema is built at import from :func:`hqs_sdk_server.app.served_document` (so pytest makes
one test per operation) and ``test_the_fuzzed_document_is_the_served_one`` checks that it is
what the service serves. It is not loaded lazily from the service with
``schemathesis.pytest.from_fixture``: schemathesis 4.32 sets ``Node._nodeid`` there, which
pytest 9.2 no longer has.

The bugs it found (and requests a fuzzer does not make, found by hand) have tests of their own
at the end of this module.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hqs_sdk_server.app import served_document
from hqs_sdk_server.testing import Service, running_service

from hqs_sdk import wire
from hqs_sdk.fileref import FILEREF_KEY
from hqs_sdk.serialization import converter
from hqs_sdk.testing import tasks
from hqs_sdk.testing.backend_contract import make_request


def _schema(max_examples: int) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict({
        "seed": 20240601,
        # Generating the larger bodies is slow on a busy machine; that says nothing of the API.
        "suppress-health-check": ["too_slow"],
        "request-timeout": 30,
        "generation": {
            "max-examples": max_examples, "deterministic": True, "database": "none",
            # The tests set the Authorization header themselves (a valid token, or a bad one);
            # a generated one would only be overwritten.
            "with-security-parameters": False,
            # The service ignores unknown query parameters and body fields, as most HTTP APIs
            # do, and the document does not forbid them: sending them proves nothing.
            "allow-extra-parameters": False,
        },
    })
    return schemathesis.openapi.from_dict(served_document(), config=config)


schema = _schema(max_examples=30)
anonymous_schema = _schema(max_examples=10)

_ROUTES = {(r.method, r.path): r for r in wire.ROUTES}
_CONFORMANCE = [schemathesis.checks.not_a_server_error,
                schemathesis.checks.status_code_conformance,
                schemathesis.checks.content_type_conformance,
                schemathesis.checks.response_schema_conformance]
_LEFT_OUT = [
    # Schema-valid requests are rightly refused with 400 or 422 where the document does not
    # say the rule: task names come from the service's catalog, cursors are opaque. (The range
    # of limit, the form of a sha256 and the length of a name could be written into it, but
    # wire.Param has no place for them yet.)
    schemathesis.checks.positive_data_acceptance,
]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("fuzz")) as running:
        yield running


@pytest.fixture(scope="module")
def token(service: Service) -> str:
    return service.token("fuzz")


@pytest.fixture(scope="module", params=["none", "unknown", "revoked", "not-bearer", "empty"])
def credentials(request: pytest.FixtureRequest, service: Service) -> dict[str, str]:
    """The Authorization header of a caller who must be turned away (none at all for "none")."""
    kind = request.param
    if kind == "revoked":
        revoked = service.token("fuzz-revoked")
        listing = service.cli("token", "list", "--user", "fuzz-revoked")
        service.cli("token", "revoke", listing.splitlines()[-1].split()[0])
        return {"Authorization": f"Bearer {revoked}"}
    return {"none": {}, "unknown": {"Authorization": "Bearer hqs_not-a-token-of-this-service"},
            "not-bearer": {"Authorization": "Basic ZnV6ejpmdXp6"},
            "empty": {"Authorization": "Bearer "}}[kind]


def _with_log(exc: BaseException, service: Service) -> None:
    exc.add_note(f"-- the service's log, last part --\n{service.log[-6000:]}")


def test_the_fuzzed_document_is_the_served_one(service: Service) -> None:
    served = requests.get(service.url + "/openapi.json", timeout=30)
    assert served.status_code == 200
    assert served.json() == served_document()


@schema.parametrize()
def test_no_request_with_a_valid_token_breaks_the_service(case: schemathesis.Case,
                                                         service: Service, token: str) -> None:
    try:
        case.call_and_validate(base_url=service.url, excluded_checks=_LEFT_OUT,
                               headers={"Authorization": f"Bearer {token}"})
    except BaseException as exc:
        _with_log(exc, service)
        raise


@anonymous_schema.parametrize()
def test_no_request_without_a_valid_token_gets_in(case: schemathesis.Case, service: Service,
                                                  credentials: dict[str, str]) -> None:
    route = _ROUTES[(case.operation.method.upper(), case.operation.path)]
    case.headers.pop("Authorization", None)  # case-insensitive
    case.headers.update(credentials)
    response = case.call(base_url=service.url)
    try:
        case.validate_response(response, checks=_CONFORMANCE)
        if case.method.upper() != route.method:
            # Coverage cases with a method the path does not have: routing refuses them first.
            assert response.status_code == 405, response.text[:500]
        elif route.authenticated:  # the token is checked before the body is read
            assert response.status_code == 401, (
                f"{case.operation.label} answered {response.status_code} to a caller with "
                f"{credentials or 'no Authorization header'}: {response.text[:500]}")
    except BaseException as exc:
        _with_log(exc, service)
        raise


# -- bugs the fuzzer found, and hostile requests it does not make -------------------------------


def _send(service: Service, method: str, path: str, token: str | None = None,
          body: bytes | None = None, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return requests.request(method, service.url + path, data=body, headers=headers, timeout=30,
                            **kwargs)


@pytest.mark.parametrize(("path", "allowed"), [
    ("/v1/executions", {"GET", "POST"}),
    ("/v1/uploads/" + "0" * 64, {"GET", "PUT"}),
    ("/v1/uploads", {"POST"}),
    ("/v1/whoami", {"GET"}),
])
def test_a_405_names_the_allowed_methods(service: Service, token: str, path: str,
                                          allowed: set[str]) -> None:
    reply = _send(service, "DELETE", path, token)
    assert reply.status_code == 405
    assert {m.strip() for m in reply.headers.get("allow", "").split(",")} - {"HEAD"} == allowed


@pytest.mark.parametrize("body", [b'{"ids": [{}]}', b'{"ids": [5]}', b'{"ids": {"a": 1}}'])
def test_json_of_the_wrong_type_is_refused(service: Service, token: str, body: bytes) -> None:
    reply = _send(service, "POST", "/v1/executions/states", token, body)
    assert reply.status_code == 422, reply.text


@pytest.mark.parametrize("body", [b"{not json", b'{"requests": "nope"}', b'{"ids": 5}'])
@pytest.mark.parametrize("path", ["/v1/executions", "/v1/executions/states"])
def test_a_request_without_a_token_is_refused_before_its_body_is_read(
        service: Service, path: str, body: bytes) -> None:
    reply = _send(service, "POST", path, None, body)
    assert reply.status_code == 401, reply.text


@pytest.fixture(scope="module")
def uploaded(service: Service, token: str) -> dict[str, Any]:
    """A file of the fuzz user's, as the upload call describes it."""
    content = b"fuzz"
    reply = _send(service, "PUT", f"/v1/uploads/{hashlib.sha256(content).hexdigest()}", token,
                  content, params={"name": "fuzz.txt"})
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def _submission(**changes: Any) -> bytes:
    request = converter.unstructure(make_request(tasks.add, a=2, b=3))
    return json.dumps({"requests": [{**request, **changes}]}).encode()


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"x": value}
    return value


def _hostile(name: str, file: dict[str, Any]) -> tuple[str, str, bytes | None, dict[str, str]]:
    """Method, path, body and query of each request below."""
    cursor = base64.urlsafe_b64encode(b"seq:" + b"9" * 20).decode().rstrip("=")
    # str.isdigit() is true for a superscript digit; int() refuses it.
    superscript = file["url"].split("?")[0] + "?expires=%C2%B2&sig=x"
    return {
        "cursor-too-large": ("GET", "/v1/executions", None, {"cursor": cursor}),
        "nested-json": ("POST", "/v1/executions/states", b"[" * 100_000, {}),
        "nested-input": ("POST", "/v1/executions", _submission(
            execution_id="nested", input={"a": _nested(900), "b": 1}), {}),
        "lone-surrogate": ("POST", "/v1/executions/states", b'{"ids": ["\\ud800"]}', {}),
        "superscript-expiry": ("GET", f"/v1/files/{file['id']}", None,
                               {"expires": "\u00b2", "sig": "x"}),
        "superscript-expiry-in-input": ("POST", "/v1/executions", _submission(
            execution_id="superscript", input={"a": {FILEREF_KEY: superscript}, "b": 1}), {}),
    }[name]


@pytest.mark.parametrize("name", [
    "cursor-too-large",  # was a 500: OverflowError, the number does not fit SQLite's INTEGER
    "nested-json",  # was a 500: RecursionError in json.loads
    "nested-input",  # was a 500: RecursionError in hqs_sdk.fileref.map_filerefs
    "lone-surrogate",  # was a 500: UnicodeEncodeError, sqlite3 cannot store a lone surrogate
    "superscript-expiry",  # was a 500: int("²") in FileStore.for_download
    "superscript-expiry-in-input",  # was a 500: the same in FileStore.inputs_to_internal
])
def test_hostile_requests_are_refused_not_crashed_on(service: Service, token: str,
                                                     uploaded: dict[str, Any], name: str
                                                     ) -> None:
    """Requests the fuzzer does not make: it keeps to valid text, small numbers, shallow values."""
    method, path, body, query = _hostile(name, uploaded)
    reply = _send(service, method, path, token, body, params=query)
    assert reply.status_code < 500, f"{method} {path}: {reply.text}\n{service.log[-3000:]}"
