"""Entry point of the bundled app: the desktop app without arguments, the CLI with them."""

from __future__ import annotations

import sys

from app.cli import main


def launch() -> None:
    """Start the GUI when run bare (double-click), else behave as `tessera ARGS`."""
    main(sys.argv[1:] if len(sys.argv) > 1 else ["gui"])


if __name__ == "__main__":
    launch()
