"""The heap settings the service applies at start-up: 1 MiB pieces reuse freed memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PIECES = textwrap.dedent("""
    import resource, sys
    from hqs_sdk_server.malloc import keep_transfer_buffers

    applied = keep_transfer_buffers() if sys.argv[1] == "tuned" else None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(100):  # a few pieces alive at once, then all freed, as in a transfer
        pieces = [bytes(256 * 1024) for _ in range(4)]
        pieces.append(b"".join(pieces))
        del pieces
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PIECES, mode], check=True,
                         capture_output=True, text=True, timeout=120).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_pieces_of_a_transfer_reuse_the_heap_instead_of_faulting_in_new_pages() -> None:
    applied, tuned = _faults("tuned")
    _, plain = _faults("plain")
    assert applied == "True"
    # Untuned, glibc gives the freed pieces back and faults them in again: about 48,000.
    assert plain > 20_000, plain
    assert tuned < plain / 20, (tuned, plain)
