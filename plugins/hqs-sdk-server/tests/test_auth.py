"""The memory of recently accepted tokens (auth.RecentTokens): what it keeps, and for how long."""

from __future__ import annotations

from hqs_sdk_server.auth import RecentTokens


def test_a_token_is_known_once_added_and_until_discarded() -> None:
    recent = RecentTokens()
    assert "Bearer hqs_a" not in recent
    assert None not in recent
    recent.add("Bearer hqs_a")
    assert "Bearer hqs_a" in recent
    assert "Bearer hqs_b" not in recent
    recent.discard("Bearer hqs_a")
    assert "Bearer hqs_a" not in recent


def test_an_entry_lasts_no_longer_than_its_lifetime() -> None:
    recent = RecentTokens(ttl_s=0.0)
    recent.add("Bearer hqs_a")
    assert "Bearer hqs_a" not in recent


def test_at_most_size_tokens_are_kept_and_the_oldest_go_first() -> None:
    recent = RecentTokens(size=3)
    for name in ("a", "b", "c"):
        recent.add(f"Bearer hqs_{name}")
    recent.add("Bearer hqs_a")  # seen again: now the newest
    recent.add("Bearer hqs_d")
    assert "Bearer hqs_b" not in recent
    assert all(f"Bearer hqs_{name}" in recent for name in ("a", "c", "d"))
    assert len(recent._until) == 3


def test_only_hashes_are_kept() -> None:
    recent = RecentTokens()
    recent.add("Bearer hqs_secret")
    assert not any("secret" in key for key in recent._until)
