"""What every command shares: the ``prefloop`` group, the consoles, the settings.

Settings are read here, at the edge, once per invocation and only when a command
needs them; so is rich: ``prefloop --help`` imports neither (nor any room).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, cast

import click

if TYPE_CHECKING:
    from rich.console import Console

    from prefloop.settings import Settings

__all__ = ["cli", "console", "err_console", "settings_of"]


class _LazyConsole:
    """A rich ``Console`` made on first use (importing rich costs more than ``--help`` may)."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def _made(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._made(), name)

    # a dunder is looked up on the type, never through __getattr__ (rich's Live does
    # ``with console:``)
    def __enter__(self) -> Console:
        return self._made().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._made().__exit__(*exc)


_TTY = sys.stdout.isatty()
# a terminal gets its own width; a pipe or a log gets tables 120 columns wide and
# lines kept whole (scripts read them)
console = cast(
    "Console", _LazyConsole(highlight=False, width=None if _TTY else 120, soft_wrap=not _TTY)
)
err_console = cast("Console", _LazyConsole(stderr=True, highlight=False, soft_wrap=True))


def settings_of(ctx: click.Context, **overrides: Any) -> Settings:
    """The invocation's settings (read once, on first use), with ``overrides`` applied.

    With no overrides and no PREFLOOP_KAFKA_NODES, the node count of the stack that
    ``prefloop up`` started wins over the default, so every command finds its brokers.
    """
    root = ctx.find_root()
    if root.obj is None:
        from prefloop.settings import load_settings

        root.obj = load_settings()
    base: Settings = root.obj
    if overrides:
        return base.with_overrides(**overrides)
    from prefloop.infra.stack_file import recorded_kafka_nodes

    nodes = recorded_kafka_nodes(base.home)
    if nodes and "PREFLOOP_KAFKA_NODES" not in os.environ and nodes != base.kafka_nodes:
        return base.with_overrides(kafka_nodes=nodes)  # the running stack's shape
    return base


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """prefloop: an online preference loop for LLMs."""
