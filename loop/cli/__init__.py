"""The ``prefloop`` command: one group, its commands in a module per area.

Every error prefloop raises on purpose is printed as one sentence (no stack
trace) with exit code 1. A command imports its room (and chDB, Ray, torch) only
when it runs, so ``prefloop --help`` answers at once.
"""

from __future__ import annotations

import sys

import click

from prefloop.errors import PrefloopError
from prefloop.loop.cli import analytics, console, serving, stack, streams, training, verdict
from prefloop.loop.cli.base import cli, err_console

__all__ = ["cli", "main"]

# importing them registers them
_COMMANDS = (analytics, console, serving, stack, streams, training, verdict)


def main(argv: list[str] | None = None) -> None:
    try:
        # not standalone: click hands a command's Exit back as its code instead of exiting
        code = cli.main(args=argv, prog_name="prefloop", standalone_mode=False)
    except PrefloopError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
