"""`hqs-sdk ui` over caches that real scripts filled, in a real headless Chromium.

Every script runs in a fresh interpreter in the test's project folder (its cache is
``.hqs_sdk_cache.db`` there, recorded in the test's own XDG cache folder, which is where
`hqs-sdk ui` finds it); the tasks run on the real local backend.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests

expect = pytest.importorskip("playwright.sync_api").expect

pytest.importorskip("hqs_sdk_local")
pytest.importorskip("hqs_sdk_sqlite")
pytest.importorskip("hqs_sdk_example")

SUBMIT_COUNTDOWN = """
    from hqs_sdk_example import countdown
    execution = countdown.submit({seconds})
    print(execution.request.execution_id)
"""

HOSTILE_NAME = "<img src=x onerror=alert(1)>"
HOSTILE_SCRIPT = "<script>alert('input')</script>"

#: Writes hostile entries into the script's cache through the cache plugin, as a buggy or
#: malicious task package could make them (names, inputs, outputs, errors, log, file refs).
HOSTILE_ENTRIES = f"""
    from datetime import UTC, datetime
    from hqs_sdk.cache import open_cache
    from hqs_sdk.config import CacheConfigurationSQLite
    from hqs_sdk.models import (CacheEntry, ErrorReport, ExecutionState, Metrics,
                                TaskExecutionRequest, TaskExecutionResponse)

    cache = open_cache(CacheConfigurationSQLite(file=".hqs_sdk_cache.db"))
    now = datetime.now(UTC)
    for n, state in enumerate((ExecutionState.FAILED, ExecutionState.SUCCEEDED)):
        request = TaskExecutionRequest(
            execution_id=f"hostile-{{n}}", task_name={HOSTILE_NAME!r},
            task_version="<script>alert('version')</script>",
            input={{"html": {HOSTILE_SCRIPT!r}, "link": "javascript:alert('url')",
                    "<b onmouseover=alert(1)>key</b>": "</pre><script>alert(9)</script>"}},
            cache_key=f"hostile@1:{{n}}", created_at=now)
        if state is ExecutionState.FAILED:
            response = TaskExecutionResponse(
                f"hostile-{{n}}", state, error=ErrorReport(
                    "<script>alert('type')</script>", "<iframe src=javascript:alert(2)>",
                    "Traceback: </pre><script>alert('tb')</script>"),
                log_tail="<script>alert('log')</script>", metrics=Metrics(started_at=now,
                                                                       finished_at=now))
        else:
            response = TaskExecutionResponse(
                f"hostile-{{n}}", state, output={{
                    "text": "<svg onload=alert('out')>",
                    "file": {{"$fileref": "javascript:alert('file')"}},
                    "url": {{"$fileref": "javascript://%0aalert('file2')"}}}},
                metrics=Metrics(started_at=now, finished_at=now))
        cache.put(CacheEntry(f"hostile@1:{{n}}", request, "local", state,
                             handle={{"dir": "/nonexistent"}}, response=response,
                             updated_at=now))
    print("ok")
"""


def _open(page: Any, ui: Any) -> None:
    response = page.goto(ui.url)
    assert response.ok, response.status
    assert page.url == ui.base, "the secret was not swapped for a cookie"


def _no_injection(page: Any) -> None:
    """Nothing hostile became markup: our one script, no handlers, no javascript: links."""
    found = page.evaluate("""() => ({
        scripts: Array.from(document.scripts).map(s => s.src),
        imgs: document.querySelectorAll('img, svg, iframe').length,
        handlers: Array.from(document.querySelectorAll('*')).filter(
            e => Array.from(e.attributes).some(a => a.name.startsWith('on'))).length,
        jsLinks: Array.from(document.querySelectorAll('a[href]')).filter(
            a => a.href.trim().toLowerCase().startsWith('javascript:')).length,
    })""")
    assert len(found["scripts"]) == 1 and found["scripts"][0].split("?")[0].endswith(
        "/static/dashboard.js"), found
    assert found["imgs"] == 0 and found["handlers"] == 0 and found["jsLinks"] == 0, found


def test_list_filter_and_search(scripts: Any, start_ui: Any, page: Any, screenshot: Any
                                ) -> None:
    out = scripts.run("""
        from hqs_sdk_example import hello, write_file
        hello("world")
        hello("dashboard")
        write_file("a file for the dashboard")
        from hqs_sdk import submit
        execution = hello.submit("search me")
        execution.result(60)
        print(execution.request.execution_id, execution.cache_key)
    """)
    searched_id, searched_key = out.split()
    ui = start_ui()
    _open(page, ui)
    assert page.locator("tbody tr").count() == 4
    assert page.locator('[data-count="succeeded"]').inner_text() == "4"
    screenshot(page, "executions")

    page.select_option("select[name=state]", "succeeded")
    page.fill("input[name=task]", "hello")
    page.click("button:text('Apply')")
    page.wait_for_url("**task=hello**")
    assert "state=succeeded" in page.url
    assert page.locator("tbody tr").count() == 3
    assert set(page.locator("tbody tr td:first-child a").all_inner_texts()) == {"hello"}

    page.goto(ui.base + f"?q={searched_key[:20]}")
    assert page.locator("tbody tr").count() == 1
    page.goto(ui.base + f"?q={searched_id}")
    assert page.locator("tbody tr").count() == 1
    page.click("tbody tr a")
    page.wait_for_url(f"**/executions/{searched_id}")
    assert "search me" in page.locator(".json-root").first.inner_text()
    page.goto(ui.base + "?task=nothing-like-this")
    assert "No executions match these filters" in page.inner_text("tbody")


def test_cursor_paging_keeps_filters(scripts: Any, start_ui: Any, page: Any) -> None:
    scripts.run("""
        from hqs_sdk import run_many
        from hqs_sdk_example import hello
        run_many([hello.bind(f"n{i}") for i in range(55)])
    """, timeout=240)
    ui = start_ui()
    _open(page, ui)
    page.goto(ui.base + "?task=hello&sort=submitted")
    first = page.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert len(first) == 50
    page.click("a[rel=next]")
    assert "task=hello" in page.url and "sort=submitted" in page.url and "cursor=" in page.url
    second = page.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert len(second) == 5 and not set(first) & set(second)
    assert page.locator("a[rel=next]").count() == 0


def test_countdown_progress_moves_and_succeeds_without_reload(
        scripts: Any, start_ui: Any, page: Any, screenshot: Any) -> None:
    execution_id = scripts.run(SUBMIT_COUNTDOWN.format(seconds=6)).strip()
    ui = start_ui()
    _open(page, ui)
    row = page.locator(f'tr[data-id="{execution_id}"]')
    assert row.locator('[data-field="state"]').inner_text() in {"queued", "running"}
    row.locator("a").click()
    page.wait_for_url(f"**/executions/{execution_id}")
    page.evaluate("window.__notReloaded = true")
    bar = page.locator(".live-progress progress")
    seen: list[float] = []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if page.locator('h1 [data-field="state"]').inner_text() == "succeeded":
            break
        if bar.count():
            value = bar.evaluate("b => b.hasAttribute('value') ? b.value : null")
            if value is not None and (not seen or seen[-1] != value):
                seen.append(value)
                if len(seen) == 2:
                    screenshot(page, "execution-running")
        time.sleep(0.2)
    assert page.locator('h1 [data-field="state"]').inner_text() == "succeeded"
    assert len(seen) >= 2 and seen == sorted(seen), f"the progress bar did not move: {seen}"
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"
    page.wait_for_selector("text=counted down from 6")
    screenshot(page, "execution-succeeded")


def test_cancel_with_the_keyboard_only(scripts: Any, start_ui: Any, page: Any,
                                       screenshot: Any) -> None:
    execution_id = scripts.run(SUBMIT_COUNTDOWN.format(seconds=120)).strip()
    ui = start_ui()
    _open(page, ui)

    def tab_to(selector: str, limit: int = 60) -> None:
        target = page.locator(selector)
        for _ in range(limit):
            page.keyboard.press("Tab")
            if target.evaluate("e => e === document.activeElement"):
                return
        raise AssertionError(f"Tab never reached {selector}")

    tab_to(f'tr[data-id="{execution_id}"] a')
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/executions/{execution_id}")
    tab_to("a[data-cancel]")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/executions/{execution_id}/cancel")
    screenshot(page, "cancel-confirm")
    assert page.evaluate("document.activeElement.textContent") == "Yes, cancel it"
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/executions/{execution_id}?message=*")
    expect(page.locator('h1 [data-field="state"]')).to_have_text("cancelled", timeout=30_000)
    assert page.dialogs == []


def test_cancel_refuses_a_form_without_its_csrf_token(scripts: Any, start_ui: Any) -> None:
    execution_id = scripts.run(SUBMIT_COUNTDOWN.format(seconds=60)).strip()
    ui = start_ui()
    session = requests.Session()
    assert session.get(ui.url, timeout=30).ok
    page = session.get(ui.base + f"executions/{execution_id}/cancel", timeout=30)
    token = page.text.split('name="csrf" value="')[1].split('"')[0]
    cancel = ui.base + f"executions/{execution_id}/cancel"
    refused = session.post(cancel, data={}, timeout=30, allow_redirects=False)
    assert refused.status_code == 403
    wrong = session.post(cancel, data={"csrf": "0" * 64}, timeout=30, allow_redirects=False)
    assert wrong.status_code == 403
    other_site = session.post(cancel, data={"csrf": token}, timeout=30, allow_redirects=False,
                              headers={"Origin": "http://evil.example"})
    assert other_site.status_code == 403
    assert "running" in session.get(ui.base + f"executions/{execution_id}", timeout=30).text \
        or "queued" in session.get(ui.base + f"executions/{execution_id}", timeout=30).text
    done = session.post(cancel, data={"csrf": token}, timeout=30, allow_redirects=False)
    assert done.status_code == 303


def test_download_an_output_file(scripts: Any, start_ui: Any, page: Any) -> None:
    execution_id = scripts.run("""
        from hqs_sdk import submit
        from hqs_sdk_example import write_file
        execution = write_file.submit("downloaded through the dashboard")
        execution.result(60)
        print(execution.request.execution_id)
    """).strip()
    ui = start_ui()
    _open(page, ui)
    page.goto(ui.base + f"executions/{execution_id}")
    with page.expect_download() as info:
        page.click(".files a")
    download = info.value
    assert download.suggested_filename == "output.txt"
    assert Path(download.path()).read_text(encoding="utf-8") == "downloaded through the dashboard"
    with page.expect_download() as info:
        page.click("text=download JSON >> nth=1")
    assert '"$fileref"' in Path(info.value.path()).read_text(encoding="utf-8")


def test_hostile_values_render_as_text(scripts: Any, start_ui: Any, page: Any,
                                       screenshot: Any) -> None:
    scripts.run(f"""
        from hqs_sdk_example import hello
        hello({HOSTILE_SCRIPT!r})
        hello("javascript:alert('input')")
    """)
    scripts.run(HOSTILE_ENTRIES)
    ui = start_ui()
    _open(page, ui)
    assert page.locator(f"text={HOSTILE_NAME}").count() == 2
    _no_injection(page)
    screenshot(page, "hostile-list")
    for execution_id in ("hostile-0", "hostile-1"):
        page.goto(ui.base + f"executions/{execution_id}")
        assert HOSTILE_NAME in page.inner_text("h1")
        _no_injection(page)
    page.goto(ui.base + "executions/hostile-0")
    assert "<iframe src=javascript:alert(2)>" in page.inner_text(".error")
    screenshot(page, "hostile-detail")
    page.goto(ui.base + f"?q={HOSTILE_SCRIPT}&task={HOSTILE_NAME}&state=<b>x</b>")
    _no_injection(page)
    time.sleep(1.5)  # give anything that was going to run the time to run
    assert page.dialogs == []


def test_refuses_requests_without_the_secret_or_from_another_host(
        scripts: Any, start_ui: Any) -> None:
    scripts.run("from hqs_sdk_example import hello\nhello('x')\n")
    ui = start_ui()
    assert requests.get(ui.base, timeout=30).status_code == 403
    assert requests.get(ui.base + "api/rows", timeout=30).status_code == 403
    assert requests.get(ui.base + "?secret=wrong", timeout=30).status_code == 403
    session = requests.Session()
    first = session.get(ui.url, timeout=30, allow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/"
    kept = requests.get(ui.url + "&task=a%26b&state=failed", timeout=30, allow_redirects=False)
    assert kept.headers["location"] == "/?task=a%26b&state=failed"  # filters survive, encoded
    cookie = first.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = session.get(ui.base, timeout=30)
    assert page.ok
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    # DNS rebinding: a page elsewhere whose name now points at 127.0.0.1 sends its own Host.
    cookies = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    for host in (f"evil.example:{ui.port}", "127.0.0.1", f"127.0.0.1:{ui.port + 1}"):
        for path in ("", "static/dashboard.css", f"?secret={ui.url.split('=')[1]}"):
            refused = requests.get(ui.base + path, headers={"Host": host, "Cookie": cookies},
                                   timeout=30, allow_redirects=False)
            assert refused.status_code == 403, (host, path)
    accepted = requests.get(ui.base, headers={"Host": f"localhost:{ui.port}", "Cookie": cookies},
                            timeout=30)
    assert accepted.status_code == 200


def test_large_values_are_cut_with_the_whole_value_a_download_away(scripts: Any,
                                                                   start_ui: Any) -> None:
    execution_id = scripts.run("""
        from hqs_sdk import submit
        from hqs_sdk.testing.tasks import echo
        execution = echo.submit({"big": "x" * 5000, "many": list(range(300))})
        execution.result(60)
        print(execution.request.execution_id)
    """).strip()
    ui = start_ui()
    session = requests.Session()
    assert session.get(ui.url, timeout=30).ok
    page = session.get(ui.base + f"executions/{execution_id}", timeout=30).text
    assert "x" * 5000 not in page and "more characters)" in page
    assert "200 more (in the download)" in page
    assert len(page) < 60_000
    whole = session.get(ui.base + f"executions/{execution_id}/output.json", timeout=30)
    assert whole.headers["content-disposition"].startswith("attachment")
    assert whole.json() == {"big": "x" * 5000, "many": list(range(300))}
