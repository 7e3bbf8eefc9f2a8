"""The analysts' commands: `ab analyze`, `export`, `forget`."""

from __future__ import annotations

from prefloop.cli import _settings, cli, console  # noqa: F401
