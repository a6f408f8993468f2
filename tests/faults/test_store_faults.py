"""Store faults (issue 11): corrupted rows, damaged files, a locked database, a full disk.

Every scenario damages a real SQLite file from outside jobkit (the sqlite3
module, byte writes, another process's lock, a 2 MiB tmpfs) and then uses
the real CLI as a subprocess.  The contract: ``jobkit`` never shows an
internal error or a traceback; a damaged file is one line naming it; a
corrupted row is skipped with one warning naming it, reported by ``jobkit
status`` and removed by ``jobkit prune --corrupted``; nothing is lost or
half-recorded.  Ground truth is read with the sqlite3 module.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jobkit.states import JobRecord, JobState
from jobkit.stores.sqlite import SQLiteStore
from jobkit_testing.faults.store import (
    Figures,
    blob_count,
    executions,
    pids_running,
    raw_rows,
    report,
    wait_until,
)

GOOD = 5


def jobkit_cli(db: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobkit", "--store", f"sqlite://{db}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def no_internal_error(done: subprocess.CompletedProcess[str]) -> bool:
    text = done.stdout + done.stderr
    return "internal error" not in text and "Traceback" not in text


def make_store(db: Path, count: int, prefix: str = "jk-ok") -> list[str]:
    store = SQLiteStore(db)
    ids = [f"{prefix}-{i}" for i in range(count)]
    now = time.time()
    store.create(
        [
            JobRecord(
                id=i,
                name="fine",
                backend="slurm",
                state=JobState.SUCCEEDED,
                created_at=now - 10,
                started_at=now - 9,
                finished_at=now - 8,
            )
            for i in ids
        ]
    )
    store.close()
    return ids


# -- each kind of corrupted row -----------------------------------------------------------


def _set_field(field: str, value: object) -> object:
    def edit(values: dict[str, object]) -> str:
        values[field] = value
        return json.dumps(values)

    return edit


CORRUPTIONS: dict[str, object] = {
    "created_at-string": _set_field("created_at", "2026-12-05"),
    "started_at-string": _set_field("started_at", "noon"),
    "finished_at-bool": _set_field("finished_at", True),
    "exit_code-string": _set_field("exit_code", "1"),
    "attempt-float": _set_field("attempt", 1.5),
    "priority-null": _set_field("priority", None),
    "name-number": _set_field("name", 5),
    "resources-list": _set_field("resources", []),
    "extra-string": _set_field("extra", "x"),
    "state-unknown": _set_field("state", "BOGUS"),
    "failure_reason-unknown": _set_field("failure_reason", "MELTED"),
    "id-mismatch": _set_field("id", "jk-someone-else"),
    "missing-field": lambda values: json.dumps({k: v for k, v in values.items() if k != "state"}),
    "not-json": lambda values: "{not json",
    "json-array": lambda values: "[1, 2]",
}


def corrupt_rows(db: Path) -> list[str]:
    """One row per kind of corruption, written with the sqlite3 module."""
    ids = make_store(db, len(CORRUPTIONS), prefix="jk-bad")
    conn = sqlite3.connect(db)
    with conn:
        for job_id, edit in zip(ids, CORRUPTIONS.values(), strict=True):
            (data,) = conn.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
            new = edit(json.loads(data))  # type: ignore[operator]
            conn.execute("UPDATE jobs SET data = ? WHERE id = ?", (new, job_id))
    conn.close()
    return ids


def test_every_kind_of_corrupted_row_is_skipped_reported_and_pruned(tmp_path: Path) -> None:
    db = tmp_path / "jobkit.db"
    good = make_store(db, GOOD)
    bad = corrupt_rows(db)
    internal = 0

    listed = jobkit_cli(db, "list", "--limit", "100")
    internal += not no_internal_error(listed)
    shown = [line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip()]
    warnings = [line for line in listed.stderr.splitlines() if line.startswith("Warning:")]
    as_json = jobkit_cli(db, "list", "--json", "--limit", "100")
    internal += not no_internal_error(as_json)
    statuses = {job_id: jobkit_cli(db, "status", job_id) for job_id in bad}
    internal += sum(not no_internal_error(done) for done in statuses.values())
    dry = jobkit_cli(db, "prune", "--corrupted", "--dry-run")
    rows_after_dry_run = len(raw_rows(db))
    pruned = jobkit_cli(db, "prune", "--corrupted", "--json")
    left = sorted(r["id"] for r in raw_rows(db))

    figures = Figures(
        "corrupted rows (one of each kind)",
        "sqlite",
        jobs=GOOD + len(bad),
        lost=len(set(good) - set(left)),
        duplicated=0,
        stuck=0,
        settle_s=None,
        note=(
            f"internal_errors={internal} warnings={len(warnings)} "
            f"pruned={len(bad) + GOOD - len(left)}"
        ),
    )
    report(figures)
    assert internal == 0, (listed.stderr, as_json.stderr)
    assert listed.returncode == 0 and as_json.returncode == 0
    assert sorted(shown) == sorted(good)
    assert sorted(r["id"] for r in json.loads(as_json.stdout)) == sorted(good)
    assert len(warnings) == len(bad), warnings  # one each, naming it
    for job_id in bad:
        assert sum(f"'{job_id}'" in w for w in warnings) == 1, (job_id, warnings)
    for job_id, done in statuses.items():
        assert done.returncode == 1, (job_id, done.stdout)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "corrupted" in lines[0] and job_id in lines[0], lines
    assert dry.returncode == 0 and all(job_id in dry.stdout for job_id in bad), dry.stdout
    assert rows_after_dry_run == GOOD + len(bad)
    assert pruned.returncode == 0, pruned.stderr
    assert sorted(json.loads(pruned.stdout)["corrupted"]) == sorted(bad)
    assert left == sorted(good)
    again = jobkit_cli(db, "list")
    assert again.returncode == 0 and "Warning" not in again.stderr


# -- damaged database files ---------------------------------------------------------------


def _truncate(db: Path) -> None:
    os.truncate(db, 5000)


def _garbage_header(db: Path) -> None:
    with open(db, "r+b") as f:
        f.write(os.urandom(4096))


def _garbage_middle(db: Path) -> None:
    with open(db, "r+b") as f:
        f.seek(8192)
        f.write(os.urandom(16384))


@pytest.mark.parametrize(
    "damage",
    [_truncate, _garbage_header, _garbage_middle],
    ids=["truncated", "garbage-header", "garbage-middle"],
)
def test_a_damaged_database_file_is_one_clear_error_naming_it(
    tmp_path: Path, damage: object
) -> None:
    db = tmp_path / "jobkit.db"
    make_store(db, 300)  # several pages, so a damaged middle is a damaged table
    damage(db)  # type: ignore[operator]
    results = {
        "list": jobkit_cli(db, "list"),
        "status": jobkit_cli(db, "status", "jk-ok-5"),
        "prune": jobkit_cli(db, "prune", "--older-than", "1d", "--dry-run"),
    }
    clear = 0
    for _command, done in results.items():
        lines = done.stderr.strip().splitlines()
        if (
            done.returncode == 1
            and len(lines) == 1
            and str(db) in lines[0]
            and no_internal_error(done)
        ):
            clear += 1
    report(
        Figures(
            f"damaged database file ({getattr(damage, '__name__', damage)})",
            "sqlite",
            jobs=300,
            lost=0,
            duplicated=0,
            stuck=0,
            settle_s=None,
            note=f"clear_errors={clear}/{len(results)}",
        )
    )
    for command, done in results.items():
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert len(lines) == 1, (command, lines)
        assert str(db) in lines[0] and no_internal_error(done), (command, lines)


# -- another writer holds the lock longer than a submit takes -----------------------------

LOCKER = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
    conn.execute("BEGIN EXCLUSIVE")
    open(sys.argv[2], "w").close()
    time.sleep(float(sys.argv[3]))
    conn.execute("ROLLBACK")
    """
)

MAPPER = textwrap.dedent(
    """
    import os, sys
    import jobkit

    markers = sys.argv[1]

    def mark(i):
        with open(os.path.join(markers, f"{i}.{os.getpid()}"), "w") as out:
            out.write("ran")
        return i

    try:
        jobs = jobkit.map(mark, range(int(sys.argv[2])))
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
    print("submitted", flush=True)
    assert jobs.results(timeout=120, progress=False) == list(range(int(sys.argv[2])))
    """
)


def _stop_agents(db: Path) -> None:
    for pid in pids_running("jobkit.scheduler.agent", str(db)):
        os.kill(pid, 9)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_submit_waits_out_another_writers_lock(tmp_path: Path) -> None:
    """A writer holds the database for 8 s (a submit normally takes milliseconds):
    the client waits (SQLite's busy timeout, 30 s) and nothing is lost."""
    db, markers, held = tmp_path / "jobkit.db", tmp_path / "markers", tmp_path / "held"
    markers.mkdir()
    SQLiteStore(db).close()  # the schema exists before the lock is taken
    items, hold = 50, 8.0
    (tmp_path / "lock.py").write_text(LOCKER)
    (tmp_path / "map.py").write_text(MAPPER)
    locker = subprocess.Popen(
        [sys.executable, str(tmp_path / "lock.py"), str(db), str(held), str(hold)]
    )
    assert wait_until(held.exists, 30) is not None
    locked_at = time.monotonic()
    env = {**os.environ, "JOBKIT_STORE": f"sqlite:///{db}", "JOBKIT_BACKEND": "local"}
    mapper = subprocess.run(
        [sys.executable, str(tmp_path / "map.py"), str(markers), str(items)],
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )
    settled = time.monotonic() - locked_at
    locker.wait(timeout=30)
    _stop_agents(db)
    rows = raw_rows(db)
    figures = Figures.count(
        f"sqlite locked {hold:g}s by another writer during a map of {items}",
        "local",
        rows,
        executions(markers),
        settled if mapper.returncode == 0 else None,
    )
    report(figures)
    assert mapper.returncode == 0, mapper.stderr
    assert len(rows) == items
    assert (figures.lost, figures.duplicated, figures.stuck) == (0, 0, 0), figures.line()
    assert settled >= hold * 0.9  # it really waited for the lock


# -- a full disk --------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> object:
    """A 2 MiB tmpfs (root only); skipped with the reason where it cannot be mounted."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 2 MiB tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        _stop_agents(mount / "jobkit.db")
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _orphans_pruned(done: subprocess.CompletedProcess[str]) -> object:
    try:
        return json.loads(done.stdout)["orphan_payloads"]
    except (ValueError, KeyError):
        return f"prune failed: {done.stderr.strip()[:80]}"


def _fill_when_payloads_written(
    mount: Path, db: Path, command: list[str], env: dict[str, str], items: int
) -> subprocess.CompletedProcess[str]:
    """Run ``command``; once every payload (and the environment blob) is written
    and no record yet, stop it, fill the disk, and let it go on."""
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if blob_count(db, "payloads") >= items and blob_count(db, "envs"):
            os.kill(proc.pid, signal.SIGSTOP)
            if len(raw_rows(db)) != 3:
                os.kill(proc.pid, signal.SIGKILL)
                pytest.skip("missed the moment between payloads and records (rows written)")
            _fill(mount, 0)
            os.kill(proc.pid, signal.SIGCONT)
            break
        time.sleep(0.0005)
    out, err = proc.communicate(timeout=200)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _fill(mount: Path, leave: int) -> None:
    """Fill the filesystem, then free ``leave`` bytes."""
    filler = mount / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    if leave:
        size = filler.stat().st_size
        os.truncate(filler, max(0, size - leave))


@pytest.mark.parametrize(
    "leave",
    [0, 16 * 1024, 96 * 1024, -1],
    ids=["full", "16KiB-free", "96KiB-free", "full-after-payloads"],
)
def test_a_submit_on_a_full_disk_fails_clearly_and_records_nothing_half(
    tiny_disk: Path, leave: int
) -> None:
    mount = tiny_disk
    db, markers = mount / "jobkit.db", mount.parent / "markers"
    markers.mkdir(exist_ok=True)
    make_store(db, 3)  # an existing store: jobs before the disk filled up
    items = 200 if leave >= 0 else 50
    script = mount.parent / "map.py"
    script.write_text(MAPPER)
    env = {**os.environ, "JOBKIT_STORE": f"sqlite:///{db}", "JOBKIT_BACKEND": "local"}
    command = [sys.executable, str(script), str(markers), str(items)]
    if leave >= 0:
        _fill(mount, leave)
        mapper = subprocess.run(command, env=env, capture_output=True, text=True, timeout=200)
    else:  # the disk fills up between the payloads and the records: the SQLite write fails
        mapper = _fill_when_payloads_written(mount, db, command, env, items)
    rows = raw_rows(db)
    new = [r for r in rows if not r["id"].startswith("jk-ok-")]
    error = mapper.stderr.strip().splitlines()
    tail = error[-1][-110:] if error else None
    listed = jobkit_cli(db, "list")
    (mount / "filler").unlink()
    orphans = jobkit_cli(db, "prune", "--orphans", "--orphan-grace", "0s", "--json")
    figures = Figures(
        f"disk full ({'filled after the payloads' if leave < 0 else f'{leave} bytes free'}) "
        f"during a map of {items}",
        "local",
        jobs=items,
        lost=0 if len(new) in (0, items) else items - len(new),
        duplicated=0,
        stuck=0,
        settle_s=None,
        note=(
            f"submit rc={mapper.returncode} rows={len(new)} error=...{tail!r} "
            f"orphan_payloads_pruned={_orphans_pruned(orphans)}"
        ),
    )
    report(figures)
    assert len(new) in (0, items), f"half-recorded: {len(new)} of {items} rows"
    assert len(rows) - len(new) == 3  # the earlier jobs are intact
    if mapper.returncode != 0:
        assert len(error) == 1 and ("space" in error[0] or "full" in error[0]), error
        assert "Traceback" not in mapper.stderr
        assert not new
    # Reading a WAL database needs room for its index: on a full disk a listing
    # may fail, but as one line that says the disk is full.
    list_lines = listed.stderr.strip().splitlines()
    assert no_internal_error(listed), listed.stderr
    assert listed.returncode == 0 or (len(list_lines) == 1 and "full" in list_lines[0]), list_lines
    assert orphans.returncode == 0, orphans.stderr
    shutil.rmtree(markers, ignore_errors=True)
