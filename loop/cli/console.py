"""`prefloop console`: the web console (the live A/B monitor)."""

from __future__ import annotations

import click

from prefloop.loop.cli.base import cli, console, settings_of


@cli.command("console")
@click.pass_context
def console_command(ctx: click.Context) -> None:
    """Serve the console: the live A/B monitor with its operator controls
    (PREFLOOP_CONSOLE_HOST, PREFLOOP_CONSOLE_PORT, PREFLOOP_CONSOLE_USERS)."""
    from prefloop.loop.console import serve_console
    from prefloop.loop.console.app import check_exposure

    settings = settings_of(ctx)
    check_exposure(settings)
    console.print(
        f"console: the A/B monitor on http://{settings.console_host}:{settings.console_port}/"
    )
    serve_console(settings)
