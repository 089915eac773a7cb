"""The `leadflow` command line: the stack, one service, Kafka, PostgreSQL and migrations."""

import sys

# httpx imports its own command line (Click, Rich: about 5 MB a process) whenever
# those happen to be installed, as Typer's and the dev tools' dependencies are. No process
# started from here runs httpx's command line, so that import is refused (None in
# sys.modules makes it an ImportError, which httpx falls back on).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
