"""An exchange served on a free 127.0.0.1 port from a background thread.

For the demo (CLI and GUI) and tests: a real uvicorn server, not a test double. uvicorn's own
logging setup is skipped (``log_config=None``): it would bind handlers to whatever stderr is at
start (pytest's capture, say) and write to it after it is closed.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LoopbackServer:
    """Serve an ASGI ``app`` on 127.0.0.1 until ``stop()``; ``url`` is its base address."""

    def __init__(self, app: Any, port: int | None = None, start_seconds: float = 15) -> None:
        import uvicorn

        self.app = app
        port = port or free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="exchange", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + start_seconds
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the exchange did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop serving (waits up to 10 s for the thread)."""
        self._server.should_exit = True
        self._thread.join(10)

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
