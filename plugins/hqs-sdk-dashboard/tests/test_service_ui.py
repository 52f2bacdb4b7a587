"""The dashboard at /ui/ of the real task service, in a real headless Chromium.

The service runs in a child process (`hqs-sdk-server serve`), which mounts the dashboard at /ui;
users' scripts submit through the real REST backend, each with its own token and cache.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests

expect = pytest.importorskip("playwright.sync_api").expect

pytest.importorskip("hqs_sdk_server")
pytest.importorskip("hqs_sdk_rest")
pytest.importorskip("hqs_sdk_example")

PREAMBLE = """
from hqs_sdk import global_config
from hqs_sdk.config import BackendConfigurationREST, CacheConfigurationSQLite
global_config.backend = BackendConfigurationREST()
global_config.cache = CacheConfigurationSQLite(file="{user}.db")
"""


class Users:
    """Tokens and scripts per user of one service."""

    def __init__(self, service: Any, scripts: Any) -> None:
        self.service = service
        self.scripts = scripts
        self.tokens: dict[str, str] = {}

    def token(self, user: str) -> str:
        if user not in self.tokens:
            self.tokens[user] = self.service.token(user)
        return self.tokens[user]

    def run(self, user: str, code: str, timeout: float = 120) -> str:
        import textwrap

        env = {"HQS_SDK_URL": self.service.url, "HQS_SDK_TOKEN": self.token(user)}
        return self.scripts.run(PREAMBLE.format(user=user) + textwrap.dedent(code),
                                timeout=timeout, extra_env=env)

    def submit(self, user: str, call: str, wait: bool = True) -> str:
        """Submit ``call`` (e.g. ``hello('x')`` of hqs_sdk_example) as ``user``; its id."""
        return self.run(user, f"""
from hqs_sdk_example import countdown, hello, write_file
from hqs_sdk.testing.tasks import echo, fail
execution = {call.replace("(", ".submit(", 1)}
if {wait!r}:
    try:
        execution.result(60)
    except Exception:
        pass
print(execution.request.execution_id)
""").strip().splitlines()[-1]


@pytest.fixture
def users(service: Any, scripts: Any) -> Users:
    return Users(service, scripts)


def sign_in(page: Any, service: Any, token: str) -> None:
    page.goto(service.url + "/ui/")
    assert "/ui/signin" in page.url
    page.fill("input[name=token]", token)
    page.click("button:text('Sign in')")
    page.wait_for_url(service.url + "/ui/")


def test_sign_in_scoped_to_the_user_and_sign_out(users: Any, service: Any, page: Any,
                                                 browser_context: Any,
                                                 screenshot: Any) -> None:
    mine = users.submit("alice", "hello('alice')")
    theirs = users.submit("bob", "hello('bob secret')")
    page.goto(service.url + "/ui/")
    assert "/ui/signin" in page.url
    page.fill("input[name=token]", "hqs_not-a-token")
    page.click("button:text('Sign in')")
    assert "unknown or revoked" in page.inner_text(".problem")
    screenshot(page, "signin")

    sign_in(page, service, users.token("alice"))
    cookie = next(c for c in browser_context.cookies() if c["name"] == "hqs_dashboard_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    assert "alice" in page.inner_text("header")
    assert page.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)") == [mine]
    screenshot(page, "service-executions")

    # Bob's execution does not exist for Alice: the page, its downloads and the live API.
    for path in (f"executions/{theirs}", f"executions/{theirs}/input.json",
                 f"executions/{theirs}/cancel"):
        response = page.goto(service.url + "/ui/" + path)
        assert response.status == 404, path
        assert "bob secret" not in page.content()
    rows = page.goto(service.url + f"/ui/api/rows?id={theirs}&id={mine}")
    assert [r["id"] for r in rows.json()["rows"]] == [mine]
    assert page.goto(service.url + f"/ui/executions/{mine}").status == 200

    page.goto(service.url + "/ui/")
    page.click("button:text('Sign out')")
    page.wait_for_url("**/ui/signin")
    page.goto(service.url + "/ui/")
    assert "/ui/signin" in page.url


def test_the_session_ends_when_its_token_is_revoked(users: Any, service: Any, page: Any
                                                    ) -> None:
    token = users.token("carol")
    sign_in(page, service, token)
    listing = service.cli("token", "list", "--user", "carol").splitlines()
    service.cli("token", "revoke", listing[1].split()[0])
    page.goto(service.url + "/ui/")
    assert "/ui/signin" in page.url


def test_countdown_moves_and_succeeds_then_cancel(users: Any, service: Any, page: Any,
                                                  screenshot: Any) -> None:
    short = users.submit("alice", "countdown(6)", wait=False)
    sign_in(page, service, users.token("alice"))
    page.goto(service.url + f"/ui/executions/{short}")
    page.evaluate("window.__notReloaded = true")
    seen: list[float] = []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if page.locator('h1 [data-field="state"]').inner_text() == "succeeded":
            break
        bar = page.locator(".live-progress progress")
        if bar.count():
            value = bar.evaluate("b => b.hasAttribute('value') ? b.value : null")
            if value is not None and (not seen or seen[-1] != value):
                seen.append(value)
                if len(seen) == 2:
                    screenshot(page, "service-execution-running")
        time.sleep(0.2)
    assert page.locator('h1 [data-field="state"]').inner_text() == "succeeded"
    assert len(seen) >= 2 and seen == sorted(seen), f"the progress bar did not move: {seen}"
    assert page.evaluate("window.__notReloaded === true")
    page.wait_for_selector("text=counted down from 6")

    long = users.submit("alice", "countdown(120)", wait=False)
    page.goto(service.url + f"/ui/executions/{long}")
    page.click("a[data-cancel]")
    page.click("button:text('Yes, cancel it')")
    expect(page.locator('h1 [data-field="state"]')).to_have_text("cancelled", timeout=30_000)
    screenshot(page, "service-execution-cancelled")


def test_download_a_file_through_a_fresh_signed_url(users: Any, service: Any, page: Any,
                                                    screenshot: Any) -> None:
    execution_id = users.submit("alice", "write_file('from the service')")
    sign_in(page, service, users.token("alice"))
    page.goto(service.url + f"/ui/executions/{execution_id}")
    link = page.locator(".files a")
    href = link.get_attribute("href")
    assert href.startswith(service.url + "/v1/files/") and "sig=" in href
    screenshot(page, "service-execution-file")
    with page.expect_download() as info:
        link.click()
    assert Path(info.value.path()).read_text(encoding="utf-8") == "from the service"


def test_hostile_values_render_as_text(users: Any, service: Any, page: Any) -> None:
    payloads = ["<script>alert('in')</script>", "javascript:alert('url')",
                "<img src=x onerror=alert(1)>"]
    echoed = users.submit("alice", f"echo({payloads!r})")
    failed = users.submit("alice", "fail(\"<script>alert('err')</script><b>bold</b>\")")
    sign_in(page, service, users.token("alice"))
    page.goto(service.url + "/ui/?q=" + payloads[0])
    for execution_id in (echoed, failed):
        page.goto(service.url + f"/ui/executions/{execution_id}")
        found = page.evaluate("""() => ({
            scripts: document.scripts.length,
            injected: document.querySelectorAll('img, svg, iframe, b').length,
            jsLinks: Array.from(document.querySelectorAll('a[href]')).filter(
                a => a.href.toLowerCase().startsWith('javascript:')).length})""")
        assert found == {"scripts": 1, "injected": 0, "jsLinks": 0}, found
    assert "<script>alert('err')</script><b>bold</b>" in page.inner_text(".error")
    time.sleep(1)
    assert page.dialogs == []


def test_tokens_list_create_revoke(users: Any, service: Any, page: Any,
                                   screenshot: Any) -> None:
    sign_in(page, service, users.token("dave"))
    page.goto(service.url + "/ui/tokens")
    assert page.locator("table.tokens tbody tr").count() == 1
    page.fill("input[name=label]", "<script>alert('label')</script>")
    page.click("button:text('Create')")
    new_token = page.inner_text("#new-token").strip()
    assert new_token.startswith("hqs_")
    screenshot(page, "tokens")
    assert requests.get(service.url + "/v1/whoami", timeout=30,
                        headers={"Authorization": f"Bearer {new_token}"}).ok
    page.goto(service.url + "/ui/tokens")
    assert new_token not in page.content(), "a token is shown once only"
    assert "<script>alert('label')</script>" in page.inner_text("table.tokens")
    page.locator("table.tokens tbody tr").nth(1).locator("button:text('Revoke')").click()
    page.wait_for_url("**/ui/tokens")
    assert requests.get(service.url + "/v1/whoami", timeout=30,
                        headers={"Authorization": f"Bearer {new_token}"}).status_code == 401
    assert page.dialogs == []


def test_forms_refuse_requests_without_csrf(users: Any, service: Any) -> None:
    execution_id = users.submit("alice", "countdown(60)", wait=False)
    session = requests.Session()
    signin = session.get(service.url + "/ui/signin", timeout=30)
    csrf = signin.text.split('name="csrf" value="')[1].split('"')[0]
    refused = session.post(service.url + "/ui/signin", timeout=30, allow_redirects=False,
                           data={"token": users.token("alice")})
    assert refused.status_code == 403
    done = session.post(service.url + "/ui/signin", timeout=30, allow_redirects=False,
                        data={"token": users.token("alice"), "csrf": csrf})
    assert done.status_code == 303
    cookie = done.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    policy = signin.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    # Behind a proxy that speaks HTTPS to the browser, the session cookie is Secure.
    https = requests.post(service.url + "/ui/signin", timeout=30, allow_redirects=False,
                          data={"token": users.token("alice"), "csrf": csrf},
                          cookies=session.cookies, headers={"X-Forwarded-Proto": "https"})
    assert https.status_code == 303 and "; secure" in https.headers["set-cookie"].lower()
    cancel = service.url + f"/ui/executions/{execution_id}/cancel"
    assert session.post(cancel, data={}, timeout=30, allow_redirects=False).status_code == 403
    before = service.cli("token", "list", "--user", "alice")
    assert session.post(service.url + "/ui/tokens", data={"action": "create"}, timeout=30,
                        allow_redirects=False).status_code == 403
    assert service.cli("token", "list", "--user", "alice") == before
    assert session.post(cancel, data={"csrf": csrf}, timeout=30,
                        allow_redirects=False).status_code == 303


def test_local_ui_shows_rest_executions_live(users: Any, service: Any, start_ui: Any,
                                            page: Any, project: Path) -> None:
    """`hqs-sdk ui` over a cache that holds REST executions (and a local one): the live
    state comes from the service through the REST backend."""
    users.run("alice", "from hqs_sdk_example import hello\nhello('on the service')\n")
    running = users.submit("alice", "countdown(5)", wait=False)
    users.scripts.run("from hqs_sdk_example import hello\nhello('on this machine')\n")
    ui = start_ui("--cache", str(project / "alice.db"),
                  extra_env={"HQS_SDK_URL": service.url, "HQS_SDK_TOKEN": users.token("alice")})
    page.goto(ui.url)
    backends = page.locator("tbody tr td:last-child").all_inner_texts()
    assert sorted(backends) == ["local", "rest", "rest"], backends
    row = page.locator(f'tr[data-id="{running}"]')
    assert row.locator('[data-field="state"]').inner_text() in {"queued", "running"}
    page.evaluate("window.__notReloaded = true")
    expect(row.locator('[data-field="state"]')).to_have_text("succeeded", timeout=40_000)
    assert page.evaluate("window.__notReloaded === true")
    page.goto(ui.base + f"executions/{running}")
    page.wait_for_selector("text=counted down from 5")
