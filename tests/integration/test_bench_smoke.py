"""The benchmark harness runs end to end and writes every result key (numbers are not judged)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.stack import MEMORY_FIGURES

KEYS = [
    "intake.leads_per_s",
    "intake.p50_ms",
    "intake.p99_ms",
    "intake.baseline_trivial_rps",
    "intake.ratio_to_trivial",
    "e2e.p50_ms",
    "e2e.p99_ms",
    "e2e.floor_p99_ms",
    "e2e.ratio_to_floor",
    # The qualifier's stage and the subscriber's, from the records' timestamps.
    "e2e.stages.qualifier.p50_ms",
    "e2e.stages.delivery.p99_ms",
    # What each part of the stack spent of the CPU while the leads were posted.
    "e2e.cpu_ms_per_lead.intake",
    "e2e.cpu_ms_per_lead.qualifier",
    "e2e.cpu_ms_per_lead.kafka",
    "e2e.cpu_ms_per_lead.machine_busy",
    "kpi_fold.events_per_s",
    "kpi_fold.floor_events_per_s",
    "kpi_fold.ratio_to_floor",
    "kpi_rebuild.seconds",
    "kpi_rebuild.million_leads_seconds_at_this_rate",
    "kpi_query.summary_p99_ms",
    "kpi_query.events_in_store",
    *MEMORY_FIGURES,
]


@pytest.mark.skipif(
    not os.environ.get("CI") and subprocess.run(["which", "wrk"], capture_output=True).returncode,
    reason="wrk is not installed (CI installs it)",
)
def test_the_harness_writes_every_result(tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_SMOKE": "1", "BENCH_RESULTS_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "bench"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "latest.json").read_text())
    for key in KEYS:
        value: object = results
        for part in key.split("."):
            assert isinstance(value, dict) and part in value, f"missing {key}"
            value = value[part]
        assert isinstance(value, int | float) and value > 0, f"{key} = {value!r}"
    external = os.environ.get("LEADFLOW_BENCH_POSTGRES_URL")
    assert results["meta"]["database"] == f"postgresql ({'external' if external else 'embedded'})"
    assert results["e2e"]["routed"] == results["e2e"]["leads"] > 0
    assert results["e2e"]["floor"]["arrived"] == results["e2e"]["floor"]["leads"] > 0
    assert results["kpi_fold"]["floor"]["events"] == results["kpi_fold"]["events"]
    assert results["intake"]["not_accepted"] == 0
    for phase, peak in results["peak_rss_mb"].items():  # a phase's peak, then its end
        assert peak >= results["rss_mb"][phase], phase
    table = (tmp_path / "latest.md").read_text()
    assert "| `intake.leads_per_s` |" in table
