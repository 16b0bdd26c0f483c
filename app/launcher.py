"""Entry point of the bundled app: the desktop app without arguments, the CLI with them."""

from __future__ import annotations

import importlib
import sys

from agents import WORKERS


def launch() -> None:
    """Start the GUI when run bare (double-click), else behave as `tessera ARGS`.

    The bundle is also its own helper processes: agents/sandbox.py starts this executable
    with SANDBOX_WORKER_ARG as the child that runs a task's model, agents/noise.py with
    NOISE_WORKER_ARG as the process that draws the DP noise.
    """
    if len(sys.argv) == 2 and sys.argv[1] in WORKERS:
        module, function = WORKERS[sys.argv[1]]
        getattr(importlib.import_module(module), function)()
        return
    from app.cli import main

    main(sys.argv[1:] if len(sys.argv) > 1 else ["gui"])


if __name__ == "__main__":
    launch()
