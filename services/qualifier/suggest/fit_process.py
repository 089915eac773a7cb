"""The fitting process: `python -m services.qualifier.suggest.fit_process`.

The qualifier streams the training rows to it (JSON lines on stdin, the first line the
definition's rule points and the parameters) and reads the fit back (one JSON document on
stdout). numpy and scikit-learn are imported only here, so the qualifier's own memory
stays what it was; the process ends with its fit, and is killed when its time is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterable
from dataclasses import asdict
from types import TracebackType

import orjson

from services.qualifier.suggest.features import Row
from services.qualifier.suggest.fitted import Fit, Params

MODULE = "services.qualifier.suggest.fit_process"


class FitFailed(RuntimeError):
    """The fitting process ended without a fit (it says nothing more: rows hold lead data)."""


class FitProcess:
    """One fit in a process of its own: `send` rows as they are read, then `result`."""

    def __init__(self, rule_points: list[int], params: Params) -> None:
        self._header = {"rule_points": rule_points, "params": asdict(params)}
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> FitProcess:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await self._write([self._header])
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def send(self, rows: Iterable[Row]) -> None:
        await self._write(r.wire() for r in rows)

    async def result(self) -> Fit:
        """Close the rows and wait for the fit (the caller bounds the wait)."""
        proc = self._process()
        assert proc.stdin is not None
        proc.stdin.close()
        out, _ = await proc.communicate()
        if proc.returncode != 0 or not out:
            raise FitFailed(f"the fitting process ended with exit code {proc.returncode}")
        return Fit.from_wire(orjson.loads(out))

    async def _write(self, items: Iterable[object]) -> None:
        proc = self._process()
        assert proc.stdin is not None
        proc.stdin.write(b"".join(orjson.dumps(i) + b"\n" for i in items))
        try:
            await proc.stdin.drain()
        except ConnectionResetError as exc:
            raise FitFailed("the fitting process ended early") from exc

    def _process(self) -> asyncio.subprocess.Process:
        if self._proc is None:
            raise RuntimeError("use FitProcess as an async context manager")
        return self._proc


def main() -> None:
    from services.qualifier.suggest.fit import fit  # numpy and scikit-learn: here only

    lines = iter(sys.stdin.buffer)
    header = orjson.loads(next(lines))
    rows = (Row.from_wire(orjson.loads(line)) for line in lines if line.strip())
    result = fit(rows, header["rule_points"], Params(**header["params"]))
    sys.stdout.buffer.write(orjson.dumps(result.wire()))


if __name__ == "__main__":
    main()
