"""Fetch the broker's jars once from Maven Central into a cache; find java and the classpath."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from cli.kafka.config import POM_FILE, BrokerConfig, BrokerError
from cli.kafka.osutil import _locked, _write_atomic

# Written into the libs dir (inside the temp dir, before the atomic rename) only after a
# complete and checked mvn run; its content is the Kafka version the jars belong to.
FETCH_MARKER = ".leadflow-fetch-complete"
MVN_TIMEOUT_S = 900.0
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # mvn -q still emits colour resets


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise BrokerError("java not found (install OpenJDK 17+ or set JAVA_HOME)")
    return found


def _classpath(libs: Path) -> str:
    # One argument, expanded by the JVM (no shell involved).
    return str(libs / "*")


def _cache_complete(libs: Path, version: str) -> bool:
    try:
        return (libs / FETCH_MARKER).read_text().strip() == version
    except OSError:
        return False


def _check_libs(libs: Path, version: str) -> None:
    """Every Kafka jar is present and on ``version`` (one version for all org.apache.kafka)."""
    jars = sorted(p.name for p in libs.glob("*.jar"))
    for required in (f"kafka_2.13-{version}.jar", f"kafka-clients-{version}.jar"):
        if required not in jars:
            raise BrokerError(f"mvn finished but {required} is missing from {libs}: {jars}")
    stray = [
        j
        for j in jars
        if (j.startswith("kafka-") or j.startswith("kafka_")) and not j.endswith(f"-{version}.jar")
    ]
    if stray:
        raise BrokerError(f"Kafka jars on another version than {version}: {stray}")
    bindings = [j for j in jars if j.startswith(("log4j-slf4j-impl-", "log4j-slf4j2-impl-"))]
    if len(bindings) != 1:
        raise BrokerError(f"expected exactly one SLF4J binding in {libs}, found {bindings}")


def fetch_jars(cfg: BrokerConfig) -> Path:
    """Fetch the broker's jars into ``<cache_dir>/libs`` once; return that dir.

    No network when the cache is complete (marker file). Otherwise mvn copies the runtime
    dependencies of ``deploy/kafka/pom.xml`` into a temp dir next to ``libs``, which is checked,
    marked and renamed into place, so a killed fetch never leaves a half-filled cache.
    """
    cache, libs = cfg.resolved_cache_dir, cfg.libs_dir
    if _cache_complete(libs, cfg.version):
        return libs
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".fetch.lock"):
        if _cache_complete(libs, cfg.version):  # another process fetched meanwhile
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("mvn not found: Maven is needed once to fetch the Kafka jars")
        if not POM_FILE.is_file():
            raise BrokerError(f"missing {POM_FILE}")
        for leftover in cache.glob(".libs-*"):  # from a killed fetch
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".libs-"))
        try:
            cmd = [
                mvn,
                "-B",
                "-q",
                "-Dstyle.color=never",
                "-f",
                str(POM_FILE),
                "dependency:copy-dependencies",
                f"-Dkafka.version={cfg.version}",
                f"-DoutputDirectory={tmp}",
            ]
            try:
                proc = subprocess.run(
                    cmd,
                    cwd=cache,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    timeout=MVN_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                out = _ANSI.sub("", exc.output) if isinstance(exc.output, str) else ""
                raise BrokerError(
                    f"mvn timed out after {MVN_TIMEOUT_S:.0f}s fetching Kafka {cfg.version}:\n{out}"
                ) from exc
            if proc.returncode != 0:
                raise BrokerError(
                    f"mvn failed (exit {proc.returncode}) fetching Kafka {cfg.version}: "
                    f"{' '.join(cmd)}\n{_ANSI.sub('', proc.stdout)}"
                )
            _check_libs(tmp, cfg.version)
            _write_atomic(tmp / FETCH_MARKER, cfg.version + "\n")
            os.chmod(tmp, 0o755)  # mkdtemp makes 0700
            if libs.exists():  # incomplete or another version: move aside, then drop
                old = Path(tempfile.mkdtemp(dir=cache, prefix=".libs-old-"))
                os.replace(libs, old / "libs")
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, libs)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return libs
