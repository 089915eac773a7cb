"""schemathesis against each service's OpenAPI on a running stack: no 5xx, answers match schemas.

Its CLI runner is used rather than its pytest plugin, which does not work with pytest 9.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"


@pytest.mark.parametrize("service", ["intake", "qualifier", "kpi"])
def test_no_5xx_and_every_answer_matches_its_schema(
    stack: Stack, service: str, tmp_path: Path
) -> None:
    st = shutil.which("st") or str(Path(sys.executable).with_name("st"))
    run = subprocess.run(
        [
            st,
            "run",
            f"{stack.urls[service]}/openapi.json",
            "--checks",
            CHECKS,
            "--header",
            "Authorization: Bearer dev",
            "--max-examples",
            "15",
            "--phases",
            "examples,coverage,fuzzing",
            "--generation-deterministic",
            "--request-timeout",
            "20",
            "--workers",
            "1",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = run.stdout[-15000:]
    assert run.returncode == 0, f"schemathesis found problems in {service}:\n{summary}"
    assert "No issues found" in run.stdout or " passed" in run.stdout, summary
