"""The client over real sockets: the whole flow, retries with backoff, refusals, garbage."""

from __future__ import annotations

import http.server
import threading
import time
from collections import deque
from collections.abc import Iterator

import numpy as np
import pytest

from agents.exchange.client import ExchangeClient, ExchangeError, ExchangeUnavailable
from agents.exchange.rewards import verify_receipt_chain
from agents.exchange.server import create_app
from agents.package import package_address
from identity.vc_jwt import issue_credential

from . import (
    SECRET,
    consent_jws,
    free_port,
    identity,
    make_package,
    payload_of,
    random_delta,
    request_payload,
    serve,
    update_jws,
)


@pytest.fixture
def live(tmp_path) -> Iterator[tuple[str, object]]:
    """A real exchange on a loopback port: (base URL, admitted organization)."""
    app = create_app(f"sqlite:///{tmp_path / 'exchange.db'}", secret=SECRET)
    org = identity()
    app.state.store.admit(org.did, "Org")
    with serve(app) as url:
        yield url, org
    app.state.store.close()


def test_whole_flow_through_the_client(live, tmp_path):
    url, org = live
    package = make_package(tmp_path)
    request = request_payload(
        org,
        package_address(package),
        rounds=1,
        aggregation={
            "strategy": "fedavg",
            "min_updates": 1,
            "round_seconds": 60,
            "max_update_norm": 10.0,
        },
    )
    token = issue_credential(org.jwk, request)
    org_client = ExchangeClient(url, org.jwk)
    vault = identity()
    client = ExchangeClient(url, vault.jwk)

    assert org_client.post_request(token, package) == request["id"]
    assert client.open_requests() == [{"request": token, "package": request["package"]}]
    assert client.package(request["package"]) == package
    consent = consent_jws(vault, token, request)
    assert client.send_consent(consent)["recorded"] is True
    assert client.current_round(request["id"])["round"] == 0
    before = client.round_params(request["id"])
    delta = random_delta()
    answer = client.submit_update(request["id"], update_jws(vault, request, consent, delta))
    again = client.submit_update(request["id"], update_jws(vault, request, consent, delta))

    assert answer["accepted"] is True
    deadline = time.monotonic() + 10  # aggregation runs in the background after the answer
    while not client.current_round(request["id"])["closed"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.current_round(request["id"])["closed"] is True
    model = org_client.model(request["id"])
    np.testing.assert_allclose(model["w"], before["w"] + delta["w"], rtol=1e-6)
    receipts = client.rewards()
    assert receipts == [answer["receipt"]]
    verify_receipt_chain(receipts, org.did, vault.did, {request["id"]: request["reward"]})
    assert org_client.status(request["id"])["accepted"] == 1
    # the identical update sent again (a retry after a lost answer) gets the same receipt
    assert again["receipt"] == answer["receipt"]
    revocation = issue_credential(
        vault.jwk,
        {
            "type": "ConsentRevocation",
            "consent": payload_of(consent)["id"],
            "subject": vault.did,
            "issued": request["issued"],
        },
    )
    assert client.send_revocation(revocation)["revoked"] is True


def test_refusal_raises_with_the_reason_and_is_not_retried(live):
    url, _ = live
    sleeps: list[float] = []
    client = ExchangeClient(url, identity().jwk, sleep=sleeps.append)

    with pytest.raises(ExchangeError, match="no request req-x") as caught:
        client.current_round("req-x")

    assert caught.value.status == 404
    assert sleeps == []


def test_client_retries_until_the_exchange_comes_up(tmp_path):
    port = free_port()
    org = identity()
    app = create_app(f"sqlite:///{tmp_path / 'late.db'}", secret=SECRET)
    up = threading.Event()
    stop = threading.Event()

    def start_late() -> None:
        time.sleep(0.6)
        with serve(app, port=port):
            up.set()
            stop.wait(20)

    thread = threading.Thread(target=start_late, daemon=True)
    thread.start()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    client = ExchangeClient(
        f"http://127.0.0.1:{port}", org.jwk, retries=6, backoff=0.1, sleep=sleep
    )
    try:
        assert client.open_requests() == []
    finally:
        stop.set()
        thread.join(10)
        app.state.store.close()
    assert up.is_set()
    assert sleeps[:3] == [0.1, 0.2, 0.4]  # exponential backoff while it was down


def test_client_gives_up_with_exchange_unavailable():
    sleeps: list[float] = []
    client = ExchangeClient(
        f"http://127.0.0.1:{free_port()}",
        identity().jwk,
        retries=3,
        backoff=0.01,
        sleep=sleeps.append,
    )

    with pytest.raises(ExchangeUnavailable, match="after 4 attempts"):
        client.submit_update("req-x", "a.b.c")

    assert sleeps == [0.01, 0.02, 0.04]


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers each call with the next scripted (status, body, delay)."""

    script: deque[tuple[int, bytes, float]] = deque()
    calls: list[str] = []
    nonces: list[str] = []

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        self.calls.append(self.path)
        self.nonces.append(self.headers.get("X-Tessera-Nonce", ""))
        status, body, delay = self.script.popleft() if self.script else (500, b"", 0.0)
        time.sleep(delay)
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[str, type[_Scripted]]]:
    """A fake exchange answering whatever the test scripts."""
    handler = type("Handler", (_Scripted,), {"script": deque(), "calls": [], "nonces": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("method", "args", "body", "message"),
    [
        ("open_requests", (), b"<html>hello</html>", "not JSON"),
        ("open_requests", (), b'{"request": 1}', "not a list"),
        ("open_requests", (), b'[{"request": 1, "package": "x"}]', "valid 'request'"),
        ("current_round", ("req-1",), b"[1, 2]", "not an object"),
        ("current_round", ("req-1",), b'{"round": "one", "closed": false}', "valid 'round'"),
        ("round_params", ("req-1",), b"PK not an npz", "readable .npz"),
        ("submit_update", ("req-1", "a.b.c"), b'{"accepted": "yes"}', "valid 'accepted'"),
        ("rewards", (), b'{"receipts": [1]}', "not a list of JWS"),
        ("package", ("sha256:" + "0" * 64,), b"some other bytes", "does not hash"),
    ],
)
def test_garbage_answers_are_refused(scripted, method, args, body, message):
    url, handler = scripted
    handler.script.append((200, body, 0.0))
    client = ExchangeClient(url, identity().jwk, retries=0)

    with pytest.raises(ExchangeError, match=message):
        getattr(client, method)(*args)


def test_npz_with_pickles_or_nan_is_refused(scripted):
    import io

    url, handler = scripted
    objects = io.BytesIO()
    np.savez(objects, w=np.array([{"a": 1}], dtype=object))
    nans = io.BytesIO()
    np.savez(nans, w=np.array([np.nan], dtype=np.float32))
    handler.script.extend([(200, objects.getvalue(), 0.0), (200, nans.getvalue(), 0.0)])
    client = ExchangeClient(url, identity().jwk, retries=0)

    with pytest.raises(ExchangeError, match="npz"):
        client.round_params("req-1")
    with pytest.raises(ExchangeError, match="finite float32"):
        client.round_params("req-1")


def test_server_errors_are_retried_then_succeed(scripted):
    url, handler = scripted
    handler.script.extend(
        [(502, b"bad gateway", 0.0), (503, b'{"error": "busy"}', 0.0), (200, b"[]", 0.0)]
    )
    client = ExchangeClient(url, identity().jwk, retries=4, backoff=0.0)

    assert client.open_requests() == []
    assert len(handler.calls) == 3


def test_slow_exchange_times_out_and_becomes_unavailable(scripted):
    url, handler = scripted
    handler.script.extend([(200, b"[]", 0.5), (200, b"[]", 0.5)])
    client = ExchangeClient(url, identity().jwk, timeout=0.2, retries=1, backoff=0.0)

    with pytest.raises(ExchangeUnavailable, match="Timeout"):
        client.open_requests()


def test_refusal_without_a_json_reason_still_says_what_came_back(scripted):
    url, handler = scripted
    handler.script.append((400, b"<html>nope</html>", 0.0))
    client = ExchangeClient(url, identity().jwk, retries=0)

    with pytest.raises(ExchangeError, match="unexpected answer"):
        client.status("req-1")


def test_each_retry_is_freshly_signed(scripted):
    url, handler = scripted
    handler.script.extend([(500, b"", 0.0), (200, b"[]", 0.0)])

    ExchangeClient(url, identity().jwk, backoff=0.0).open_requests()

    assert len(handler.nonces) == 2
    assert handler.nonces[0] != handler.nonces[1]  # a replayed nonce would be refused
