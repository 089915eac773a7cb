"""`python -m cli` is the `leadflow` command."""

from cli.main import app

app()
