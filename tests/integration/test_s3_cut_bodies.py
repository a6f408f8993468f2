"""An S3 endpoint that cuts a response body short, over real HTTP.

botocore retries a request until its headers arrive; a connection that breaks
while the body streams surfaces from ``Body.read()`` as urllib3's or
botocore's own errors.  The store must call that an outage
(``StoreUnavailableError``, which the patient store waits out), never let a
raw library error escape into the agent or the CLI.  A guard: botocore
1.43 already wraps both a clean close and a reset mid-body in
``ResponseStreamingError``; the store also maps urllib3's and http.client's
own errors should a client version let them through.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from jobkit.errors import StoreUnavailableError
from jobkit.stores import open_store


class CutShort(http.server.BaseHTTPRequestHandler):
    """Announces 1,000 bytes, sends 10, hangs up."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.send_header("ETag", '"abc"')
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def cutting_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CutShort)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_body_cut_short_is_an_outage_for_blobs_and_records(cutting_endpoint: str) -> None:
    store = open_store(f"s3://bucket/cut?endpoint_url={cutting_endpoint}")
    try:
        with pytest.raises(StoreUnavailableError, match="s3://bucket/cut/"):
            store.get_blob("payloads/jk-x")
        with pytest.raises(StoreUnavailableError, match="s3://bucket/cut/"):
            store.get("jk-x")
    finally:
        store.close()
