"""Live views of running jobs, over HTTP as the browser's EventSource sees
them: the real ``jobkit ui`` command, real jobs on the local backend.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from uiserver import ui_server

import jobkit
from conftest import local_env

pytestmark = pytest.mark.timeout(120)
LINE = 100  # characters per line of ``long_log``, newline included


def long_log(lines: int, marker: str, more: int) -> int:
    """``lines`` lines, then (once ``marker`` exists) ``more`` lines."""
    import os
    import sys

    for i in range(lines):
        sys.stdout.write(f"line {i:07d} " + "x" * (LINE - 14) + "\n")
    sys.stdout.flush()
    while not os.path.exists(marker):
        time.sleep(0.1)
    for i in range(lines, lines + more):
        sys.stdout.write(f"line {i:07d} " + "x" * (LINE - 14) + "\n")
        sys.stdout.flush()
    return lines + more


def read_events(base: str, path: str, headers: dict[str, str]) -> list[tuple[str, Any]]:
    """The stream's events until ``end`` (name, decoded data)."""
    request = urllib.request.Request(f"{base}{path}", headers=headers)
    found: list[tuple[str, Any]] = []
    with urllib.request.urlopen(request, timeout=60) as response:
        buffer = b""
        while not found or found[-1][0] != "end":
            chunk = response.read1(65536)
            assert chunk, f"the stream closed before its end event: {found[-3:]!r}"
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                fields = dict(
                    line.split(": ", 1) for line in block.decode().split("\n") if ": " in line
                )
                if "event" in fields:
                    found.append((fields["event"], json.loads(fields["data"])))
    return found


def test_live_logs_of_a_log_longer_than_the_page_continue_without_repeating(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "go-on"
    first, more = 3200, 50  # 320,000 characters: over the 256 KiB the page shows
    with local_env(tmp_path) as client:
        job = jobkit.submit(long_log, first, str(marker), more)
        deadline = time.monotonic() + 60
        while len(client.read_logs(client.store.get(job.id), "stdout")) < first * LINE:
            assert time.monotonic() < deadline, "the job never wrote its first lines"
            time.sleep(0.2)
        with ui_server(f"sqlite:///{tmp_path}/jobkit.db") as server:
            headers = {"Authorization": f"Bearer {server.token}"}
            request = urllib.request.Request(f"{server.base}/jobs/{job.id}", headers=headers)
            with urllib.request.urlopen(request, timeout=30) as response:
                page = response.read().decode()
            found = re.search(r'id="log-stdout" data-stream="stdout" data-offset="(\d+)"', page)
            assert found, page[:2000]
            offset = int(found[1])
            assert offset == first * LINE, "the offset is the whole log's length, not the cut's"
            assert 'id="cut-stdout"' in page
            marker.touch()
            events = read_events(
                server.base, f"/jobs/{job.id}/logs/stdout/events?offset={offset}", headers
            )
        assert job.result(timeout=60) == first + more
    assert events[-1] == ("end", "SUCCEEDED")
    streamed = "".join(data for name, data in events if name == "text")
    numbers = [int(n) for n in re.findall(r"^line (\d+) ", streamed, re.MULTILINE)]
    assert numbers == list(range(first, first + more)), numbers[:5]


def sleeper(seconds: float) -> None:
    print("started", flush=True)
    time.sleep(seconds)


def test_a_job_whose_worker_and_agent_died_ends_on_the_open_page(tmp_path: Path) -> None:
    """Nobody but the view asks the backend: the agent that watched the
    worker is killed with it, and no client of this test is open."""
    import os
    import signal

    store = f"sqlite:///{tmp_path}/jobkit.db"
    with local_env(tmp_path) as client:
        job_id = jobkit.submit(sleeper, 120).id
        deadline = time.monotonic() + 60
        while (record := client.store.get(job_id)).state.value != "RUNNING":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.2)
        assert record.pid is not None
        stat = Path(f"/proc/{record.pid}/stat").read_text()
        agent = int(stat.rsplit(")", 1)[1].split()[1])  # the worker's parent: the agent
        assert "jobkit.scheduler.agent" in Path(f"/proc/{agent}/cmdline").read_text()
        client._backends.pop("local", None)  # leave the agent running past the block
    try:
        with ui_server(store) as server:
            headers = {"Authorization": f"Bearer {server.token}"}
            request = urllib.request.Request(f"{server.base}/jobs/{job_id}", headers=headers)
            with urllib.request.urlopen(request, timeout=30) as response:
                assert "state-running" in response.read().decode()
            os.kill(agent, signal.SIGKILL)
            os.kill(record.pid, signal.SIGKILL)
            events = read_events(server.base, f"/jobs/{job_id}/logs/stdout/events", headers)
            assert events[-1] == ("end", "FAILED"), events
            with urllib.request.urlopen(request, timeout=30) as response:
                page = response.read().decode()
            assert "state-failed" in page and "LOST" in page, page[:3000]
    finally:
        with local_env(tmp_path) as cleanup:
            cleanup.backend("local").stop_agent()
