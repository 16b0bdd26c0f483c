"""Entry point of the bundled app: the desktop app without arguments, the CLI with them."""

from __future__ import annotations

import sys

from agents import SANDBOX_WORKER_ARG


def launch() -> None:
    """Start the GUI when run bare (double-click), else behave as `tessera ARGS`.

    The bundle is also its own task sandbox: agents/sandbox.py starts this executable with
    SANDBOX_WORKER_ARG as the child that runs a task's model.
    """
    if sys.argv[1:] == [SANDBOX_WORKER_ARG]:
        from agents.sandbox_worker import main as sandbox_worker

        sandbox_worker()
        return
    from app.cli import main

    main(sys.argv[1:] if len(sys.argv) > 1 else ["gui"])


if __name__ == "__main__":
    launch()
