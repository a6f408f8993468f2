"""The token redirect of ``jobkit ui`` stays on the server, whatever path is
asked: raw HTTP requests (http.client sends the path as written) to the real
command.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest
from uiserver import Server, ui_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("ui-security")
    with ui_server(f"sqlite:///{directory}/jobkit.db") as running:
        yield running


def raw_get(server: Server, target: str) -> http.client.HTTPResponse:
    host = server.base.removeprefix("http://")
    connection = http.client.HTTPConnection(host, timeout=10)
    connection.request("GET", target)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("//evil.com/?token={t}", "/evil.com/"),
        ("/\\evil.com/?token={t}", "/%5Cevil.com/"),
        ("///evil.com?token={t}&state=FAILED", "/evil.com?state=FAILED"),
        ("/?state=FAILED&token={t}&name=a%0d%0ab", "/?state=FAILED&name=a%0D%0Ab"),
    ],
)
def test_the_token_redirect_never_leaves_the_server(
    server: Server, target: str, location: str
) -> None:
    response = raw_get(server, target.format(t=server.token))
    assert response.status == 303
    assert response.getheader("Location") == location


def test_a_header_break_in_the_path_is_quoted_not_a_server_error(server: Server) -> None:
    response = raw_get(server, f"/%0d%0aSet-Cookie:%20x=1?token={server.token}")
    assert 300 <= response.status < 400 or response.status == 400, response.status
    assert response.getheader("Location") == "/%0D%0ASet-Cookie%3A%20x%3D1"
    assert response.getheader("Set-Cookie", "").count("x=1") == 0
    assert server.process.poll() is None, "the server is still up"
