"""S3 over real HTTP for tests: one moto server per session, reset between tests.

Test modules load these fixtures with ``pytest_plugins = ["s3_fixtures"]``.
The store under test talks to a ``moto.server.ThreadedMotoServer`` on
127.0.0.1 through the unmodified boto3 client, found through the standard
chain (``AWS_ENDPOINT_URL`` and fake credentials set per test), as in
s3fs's test suite.  Each test starts from an empty server
(``POST /moto-api/reset``).

One gap of moto 5.2 is closed here: its ``PutObject``/``DeleteObject``
handlers check ``If-Match``/``If-None-Match`` and then write, without a lock
between the two, so two concurrent conditional writes can both pass the
check.  AWS S3 makes each conditional write atomic; the server here does too
by running those two handlers one at a time.  Reads stay concurrent.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

BUCKET = "jobkit-test"
REGION = "us-east-1"


def _atomic_conditional_writes(mp: pytest.MonkeyPatch) -> None:
    from moto.s3.responses import S3Response

    lock = threading.Lock()

    def one_at_a_time(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return handler(*args, **kwargs)

        return locked

    for name in ("put_object", "delete_object"):
        mp.setattr(S3Response, name, one_at_a_time(getattr(S3Response, name)))


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server running for the whole session."""
    try:
        import moto.server as server_module
    except ImportError:
        hint = "moto[server] is in the dev extra: pip install -e '.[dev]'"
        if os.environ.get("CI") or os.environ.get("JOBKIT_REQUIRE_S3"):
            pytest.fail(f"{hint}; CI must run the S3 tests, not skip them")
        pytest.skip(hint)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    mp = pytest.MonkeyPatch()
    _atomic_conditional_writes(mp)
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        mp.undo()


def reset_moto(endpoint: str) -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def use_fake_aws(mp: pytest.MonkeyPatch, endpoint: str) -> None:
    """Point boto3's standard chain at ``endpoint`` with fake credentials, and nothing else."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL_S3",
        "AWS_MAX_ATTEMPTS",
        "AWS_RETRY_MODE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        mp.delenv(name, raising=False)
    mp.setenv("AWS_ENDPOINT_URL", endpoint)
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_DEFAULT_REGION", REGION)
    mp.setenv("AWS_CONFIG_FILE", "/nonexistent/jobkit-test/aws-config")
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/jobkit-test/aws-credentials")
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def s3_endpoint(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty moto server, reachable through the standard boto3 chain."""
    reset_moto(moto_server)
    use_fake_aws(monkeypatch, moto_server)
    return moto_server


@pytest.fixture
def s3_client(s3_endpoint: str) -> Iterator[Any]:
    """A plain boto3 client of the test server (to set things up behind the store's back)."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    yield client
    client.close()


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """The name of an empty bucket on the test server."""
    s3_client.create_bucket(Bucket=BUCKET)
    return BUCKET
