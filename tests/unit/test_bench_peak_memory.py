"""The bench's memory peaks: VmHWM read, and started over for each phase."""

from __future__ import annotations

import subprocess
import sys

from bench.stack import peak_rss_mb, reset_peak, rss_mb

# Touches 120 MB, lets it go (returned to the system at once: one large mapping), then
# says so and waits.
_SPIKE = (
    "import sys, time\n"
    "b = bytearray(120 * 1024 * 1024)\n"
    "for i in range(0, len(b), 4096): b[i] = 1\n"
    "del b\n"
    "print('freed', flush=True)\n"
    "time.sleep(60)\n"
)


def test_a_phase_peak_is_its_own_after_a_reset() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _SPIKE], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "freed"
        held = rss_mb(proc.pid)
        assert held < 60  # the spike is gone from what the process holds
        assert peak_rss_mb(proc.pid) >= 120  # but not from its peak
        reset_peak(proc.pid)
        assert peak_rss_mb(proc.pid) < 60  # the next phase's peak starts from now
    finally:
        proc.kill()
        proc.wait()
