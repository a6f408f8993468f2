"""A real agent speaks jobkit.scheduler.protocol: junk is ignored, ping is answered."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import helpers

import jobkit
from conftest import local_env
from jobkit.scheduler.protocol import LineReader, Op, encode_request

T = 60


def test_a_running_agent_ignores_junk_and_answers_ping(tmp_path: Path) -> None:
    with local_env(tmp_path, cpus=2, max_jobs=3) as client:
        assert jobkit.submit(helpers.square, 4).result(timeout=T) == 16  # agent up
        backend = client.backend("local")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(T)
            conn.connect(str(backend.paths.socket))
            conn.sendall(b"not json\n" + b'{"op": "explode"}\n' + encode_request(Op.PING))
            reader, lines = LineReader(), []
            while not lines:
                lines = reader.feed(conn.recv(65536))

        status = json.loads(lines[0])
        assert status["pid"] == int(backend.paths.lock.read_text())
        assert status["running"] == []
        assert status["machine"] == backend.agent_settings.machine()
        assert status["machine"]["max_jobs"] == 3
        # Still serving after the junk.
        assert jobkit.submit(helpers.square, 5).result(timeout=T) == 25
