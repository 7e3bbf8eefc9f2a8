"""The console: one web application for the people around the loop.

Operators watch an experiment live and promote or roll back (:mod:`.monitor`).
It is a Starlette application of its
own (:mod:`.app`), served by uvicorn; its pages are plain HTML and JavaScript that
read the same JSON API the tests and scripts read.
"""

from prefloop.loop.console.app import build_app, serve_console

__all__ = ["build_app", "serve_console"]
