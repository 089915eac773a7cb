"""The service process's allocator setting (shared/malloc.py): large blocks freed go back
to the system even after an earlier large block raised glibc's threshold."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.malloc import _glibc

pytestmark = pytest.mark.skipif(not _glibc(), reason="glibc's allocator only")

# A 4 MB block freed (glibc raises its threshold to 4 MB), then forty 1 MB blocks, every page
# written, all freed but the last: how much more the process holds afterwards, in MB.
PROBE = """
import os, sys
from bench.stack import rss_mb
from shared.malloc import pin_mmap_threshold
if sys.argv[1] == "pinned":
    assert pin_mmap_threshold()
block = bytearray(4 << 20)
del block
before = rss_mb(os.getpid())
blocks = [bytearray(1 << 20) for _ in range(40)]
for b in blocks:
    b[::4096] = b"\\x01" * 256  # a byte in each page
kept = blocks[-1]
del blocks
print(rss_mb(os.getpid()) - before)
"""


def _held_mb(mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env
    )
    return float(out.stdout)


def test_large_blocks_freed_are_returned_once_the_threshold_is_pinned() -> None:
    assert _held_mb("pinned") < 5


def test_without_the_pin_glibc_keeps_them_in_its_heap() -> None:
    # The probe's control: the case the setting is for does happen here.
    assert _held_mb("default") > 30


def test_the_environment_setting_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.malloc import pin_mmap_threshold

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert pin_mmap_threshold() is False
