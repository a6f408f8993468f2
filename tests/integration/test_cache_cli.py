"""``jobkit cache list/clear``, ``status`` and ``list`` of cached jobs, as a user runs them.

Real local jobs on a real SQLite store; the CLI runs as a subprocess
(``python -m jobkit``), so exit codes and stderr are what a shell sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobkit
from conftest import local_env


@jobkit.remote(cache=True, name="featurize")
def featurize(x: int) -> int:
    return x * 10


@jobkit.remote(cache="v1", name="embed")
def embed(x: int) -> int:
    return x + 1


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Any]:
    with local_env(tmp_path) as opened:
        yield opened


def cli(client: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JOBKIT_STORE": client.store.url, "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "jobkit", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_cache_list_status_list_and_clear(client: Any) -> None:
    first = featurize.submit(3)
    assert first.result(timeout=60) == 30
    assert embed.map([1, 2]).results(timeout=60) == [2, 3]
    hit = featurize.submit(3)
    assert hit.done() and hit.info.cached_from == first.id
    assert f"SUCCEEDED (cached from {first.id})" in repr(hit)
    assert "cached from" in hit._repr_html_() and first.id in hit._repr_html_()

    listed = cli(client, "cache", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert sorted(e["name"] for e in entries) == ["embed", "embed", "featurize"]
    mine = next(e for e in entries if e["name"] == "featurize")
    assert mine["job_id"] == first.id and mine["state"] == "SUCCEEDED"
    assert mine["function"].endswith("featurize") and len(mine["key"]) == 64
    assert mine["created_at"] == pytest.approx(first.info.created_at)

    table = cli(client, "cache", "list")
    assert table.returncode == 0 and first.id in table.stdout and "SOURCE JOB" in table.stdout

    status = cli(client, "status", hit.id)
    assert f"SUCCEEDED (cached from {first.id})" in status.stdout, status.stdout
    status_json = json.loads(cli(client, "status", hit.id, "--json").stdout)
    assert status_json["extra"]["cached_from"] == first.id
    jobs = cli(client, "list", "--name", "featurize")
    assert f"SUCCEEDED (cached from {first.id})" in jobs.stdout, jobs.stdout
    result = cli(client, "result", hit.id)
    assert result.returncode == 0 and result.stdout.strip() == "30"

    # Without --yes and without a terminal: one line, nothing cleared.
    refused = cli(client, "cache", "clear", "--name", "feat*")
    assert refused.returncode == 1
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--yes" in lines[0] and "1 cached call" in lines[0], lines
    assert len(json.loads(cli(client, "cache", "list", "--json").stdout)) == 3

    cleared = cli(client, "cache", "clear", "--name", "feat*", "--yes")
    assert cleared.returncode == 0 and "Cleared 1" in cleared.stdout, cleared
    left = json.loads(cli(client, "cache", "list", "--json").stdout)
    assert sorted(e["name"] for e in left) == ["embed", "embed"]
    # The jobs and results stay; the call runs again and becomes the new entry.
    assert hit.result() == 30
    again = featurize.submit(3)
    assert again.info.cached_from is None and again.result(timeout=60) == 30
    assert featurize.submit(3).info.cached_from == again.id

    assert cli(client, "cache", "clear", "--yes").returncode == 0
    assert json.loads(cli(client, "cache", "list", "--json").stdout) == []
    empty = cli(client, "cache", "list")
    assert empty.returncode == 0 and "No cached calls" in empty.stderr
    nothing = cli(client, "cache", "clear", "--yes")
    assert nothing.returncode == 0 and "No cached calls" in nothing.stderr


def test_cache_false_forces_a_run_and_leaves_the_entry(client: Any) -> None:
    first = featurize.submit(4)
    assert first.result(timeout=60) == 40
    forced = featurize.options(cache=False).submit(4)
    assert forced.info.cached_from is None and forced.result(timeout=60) == 40
    assert featurize.submit(4).info.cached_from == first.id


def test_a_failed_source_is_a_miss(client: Any) -> None:
    @jobkit.remote(cache=True)
    def flaky(path: str) -> str:
        if not Path(path).exists():
            raise FileNotFoundError(path)
        return "ok"

    marker = client.store.local_dir / "marker"
    failed = flaky.submit(str(marker))
    with pytest.raises(FileNotFoundError):
        failed.result(timeout=60)
    marker.write_text("now")
    rerun = flaky.submit(str(marker))
    assert rerun.info.cached_from is None and rerun.result(timeout=60) == "ok"
    assert flaky.submit(str(marker)).info.cached_from == rerun.id


def test_a_pruned_source_is_a_miss_and_its_hits_say_why(client: Any) -> None:
    first = featurize.submit(5)
    assert first.result(timeout=60) == 50
    hit = featurize.submit(5)
    assert client.store.delete([first.id]) == 1  # what `jobkit prune` does to old jobs
    with pytest.raises(jobkit.StoreError) as caught:
        jobkit.get(hit.id).result()
    message = str(caught.value)
    assert f"cached result of job {first.id}" in message and "submit the call again" in message
    rerun = featurize.submit(5)
    assert rerun.info.cached_from is None and rerun.result(timeout=60) == 50


_SUBMIT_AND_DIE = """
import os, signal, sys
import jobkit
sys.path[:0] = [sys.argv[1], os.path.dirname(sys.argv[1])]  # the test module, conftest
from test_cache_cli import featurize
with jobkit.use(store=sys.argv[2], backend="local", local={"idle_timeout": 10}):
    job = featurize.submit(6)
    print(job.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_submitter_killed_after_submitting_still_fills_the_cache(client: Any) -> None:
    here = str(Path(__file__).parent)
    died = subprocess.run(
        [sys.executable, "-c", _SUBMIT_AND_DIE, here, client.store.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert died.returncode == -9, died.stderr
    job_id = died.stdout.split()[0]
    source = jobkit.get(job_id)
    assert source.result(timeout=60) == 60  # the agent ran it without its submitter
    hit = featurize.submit(6)
    assert hit.info.cached_from == job_id and hit.result() == 60
    assert [j.id for j in jobkit.jobs(name="featurize", limit=10)] == [hit.id, job_id]


def test_a_big_map_reuses_its_cached_items(client: Any) -> None:
    from jobkit import caching

    count = caching.LIST_FIRST + 6  # past the size at which pointers are listed first
    first = featurize.map(range(count))
    assert first.results(timeout=120) == [10 * i for i in range(count)]
    second = featurize.map(range(count + 2))
    cached = [j.info.cached_from for j in second]
    assert cached == [j.id for j in first] + [None, None]
    assert second.results(timeout=60) == [10 * i for i in range(count + 2)]
