"""Timelines of a real array run on the local backend: the SVG parsed, the PNG
opened with Pillow, and ``jobkit timeline`` run as a user runs it (a
subprocess), bad input included; plus 10,000 records written to a real SQLite
store, drawn within a size bound.

The array: 6 items; items 1 and 4 raise (FAILED), item 2 is SIGKILLed on its
first attempt (LOST, retried once, then SUCCEEDED: one earlier attempt)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import timeline_item

import jobkit
from conftest import local_env
from jobkit.lookup import array_members
from jobkit.states import JobRecord, JobState
from jobkit.stores import open_store
from jobkit.timeline import COLOURS, MAX_ROWS, render_svg

SVG = "{http://www.w3.org/2000/svg}"
ITEMS = 6
FAILING = {1, 4}
RETRIED = 2
WANTED = {i: JobState.FAILED if i in FAILING else JobState.SUCCEEDED for i in range(ITEMS)}


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, list[JobRecord]]]:
    """(client, array id, the items' records) once the array has ended."""
    directory = tmp_path_factory.mktemp("timeline")
    markers = directory / "markers"
    markers.mkdir()
    with local_env(directory, cpus=4) as client:
        array = jobkit.remote(retries=1)(timeline_item).map(range(ITEMS), marker_dir=str(markers))
        assert array.wait(timeout=120), array.states()
        records = array_members(client.store, array.id)
        assert {r.array_index: r.state for r in records} == WANTED
        assert [len(r.attempts) for r in records] == [0, 0, 1, 0, 0, 0]
        yield client, array.id, records


def cli(client: Any, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobkit", "--store", client.store.url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def items(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "item"]


def bars(group: ET.Element) -> dict[str, ET.Element]:
    """The group's bars by kind (queued, running, end, attempt)."""
    found = {}
    for rect in group.findall(f"{SVG}rect"):
        classes = (rect.get("class") or "").split()
        assert classes[0] == "bar", classes
        found[classes[1]] = rect
    return found


def span(rect: ET.Element) -> tuple[float, float]:
    x, w = float(rect.get("x", "nan")), float(rect.get("width", "nan"))
    return x, x + w


def test_svg_has_one_group_per_item_with_bars_in_time_order(
    ran: tuple[Any, str, list[JobRecord]],
) -> None:
    _client, _array_id, records = ran
    svg = render_svg(records)
    for outside in ("<script", "href", "@import", "url(", "<style"):
        assert outside not in svg  # self-contained: nothing fetched, nothing run
    groups = items(svg)
    assert [int(g.get("data-index", "-1")) for g in groups] == list(range(ITEMS))
    assert {int(g.get("data-index", "-1")): g.get("data-state") for g in groups} == {
        i: s.value for i, s in WANTED.items()
    }
    for group, record in zip(groups, records, strict=True):
        found = bars(group)
        assert {"queued", "running", "end"} <= set(found), found
        queued, running, end = span(found["queued"]), span(found["running"]), span(found["end"])
        # queued < running < end in time (a bar is at least 1 px wide, to be seen)
        assert queued[0] <= running[0] and queued[1] <= max(running[0] + 0.2, queued[0] + 1.0)
        assert running[0] < running[1] <= end[0] + 1.5
        expected_fill = COLOURS[record.state.value]
        assert found["running"].get("fill") == expected_fill
        assert found["queued"].get("fill") == COLOURS["queued"]
        titles = [t.text or "" for t in group.iter(f"{SVG}title")]
        assert titles and all(record.id in t for t in titles)
        running_title = found["running"].findtext(f"{SVG}title") or ""
        assert record.state.value in running_title and "ran for" in running_title
        assert "queued for" in running_title and f"host: {record.host}" in running_title
        if record.state is JobState.FAILED:
            assert "failure: " in running_title and "custom failure" in running_title
        if int(group.get("data-index", "-1")) == RETRIED:
            attempt = span(found["attempt"])
            # the killed attempt ran before the retry started
            assert attempt[0] < running[0]
            assert "LOST" in (found["attempt"].findtext(f"{SVG}title") or "")
        else:
            assert "attempt" not in found
    # a time axis from the first submission, with second ticks
    ticks = [t for t in ET.fromstring(svg).iter(f"{SVG}text") if t.get("class") == "tick"]
    assert ticks and ticks[0].text == "0s" and all((t.text or "").endswith("s") for t in ticks)


def test_running_bar_reaches_now(ran: tuple[Any, str, list[JobRecord]]) -> None:
    """A running item is drawn to ``now``: the renderer is given that moment."""
    _client, _array_id, records = ran
    first = records[0]
    live = dataclasses.replace(first, state=JobState.RUNNING, finished_at=None)
    later = max(r.finished_at or 0 for r in records) + 30
    svg = render_svg([live, *records[1:]], now=later)
    found = bars(items(svg)[0])
    assert "end" not in found and found["running"].get("fill") == COLOURS["RUNNING"]
    others = [span(r)[1] for g in items(svg)[1:] for r in g.findall(f"{SVG}rect")]
    assert span(found["running"])[1] > max(others) + 100  # 30 s past every end


def test_cli_writes_svg_and_png_of_the_same_layout(
    ran: tuple[Any, str, list[JobRecord]], tmp_path: Path
) -> None:
    from PIL import Image

    client, array_id, _records = ran
    svg_path, png_path = tmp_path / "t.svg", tmp_path / "t.png"
    made = cli(
        client, "timeline", array_id, "-o", str(svg_path), "--width", "600", "--height", "240"
    )
    assert made.returncode == 0, made.stderr
    assert str(svg_path) in made.stdout and f"{ITEMS} item(s)" in made.stdout
    svg = svg_path.read_text()
    assert len(items(svg)) == ITEMS
    made = cli(
        client, "timeline", array_id, "-o", str(png_path), "--width", "600", "--height", "240"
    )
    assert made.returncode == 0, made.stderr
    with Image.open(png_path) as image:
        assert image.format == "PNG" and image.size == (600, 240)
        pixels = image.convert("RGB")
        for group in items(svg):
            x0, x1 = span(bars(group)["running"])
            rect = bars(group)["running"]
            y = float(rect.get("y", "0")) + float(rect.get("height", "0")) / 2
            r, g, b = pixels.getpixel(((x0 + x1) / 2, y))  # type: ignore[misc]
            if group.get("data-state") == "FAILED":
                assert r > 150 and g < 100 and b < 100, (group.get("data-index"), (r, g, b))
            else:
                assert g > r + 40 and g > b + 40, (group.get("data-index"), (r, g, b))


def test_cli_default_file_and_a_single_job(
    ran: tuple[Any, str, list[JobRecord]], tmp_path: Path
) -> None:
    client, array_id, records = ran
    made = cli(client, "timeline", array_id, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    default = tmp_path / f"timeline-{array_id}.svg"
    assert len(items(default.read_text())) == ITEMS
    one = records[1]
    made = cli(client, "timeline", one.id, "-o", str(tmp_path / "one.svg"))
    assert made.returncode == 0, made.stderr
    (group,) = items((tmp_path / "one.svg").read_text())
    assert group.get("data-index") == "1" and group.get("data-state") == "FAILED"


def test_cli_bad_input_is_one_line_and_writes_nothing(
    ran: tuple[Any, str, list[JobRecord]], tmp_path: Path
) -> None:
    client, array_id, _records = ran
    unknown = cli(client, "timeline", "jk-nosuchthing", "-o", str(tmp_path / "x.svg"))
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.count("\n") == 1 and "jk-nosuchthing" in unknown.stderr
    suffix = cli(client, "timeline", array_id, "-o", str(tmp_path / "x.jpg"))
    assert suffix.returncode == 2
    assert suffix.stderr.count("\n") == 1, suffix.stderr
    assert "'.jpg'" in suffix.stderr and ".svg" in suffix.stderr and ".png" in suffix.stderr
    none = cli(client, "timeline", array_id, "-o", str(tmp_path / "noext"))
    assert none.returncode == 2 and "no suffix" in none.stderr
    width = cli(client, "timeline", array_id, "-o", str(tmp_path / "w.svg"), "--width", "0")
    assert width.returncode == 2 and "--width" in width.stderr
    small = cli(client, "timeline", array_id, "-o", str(tmp_path / "s.svg"), "--height", "5")
    assert small.returncode == 1 and "at least" in small.stderr and small.stderr.count("\n") == 1
    nowhere = cli(client, "timeline", array_id, "-o", str(tmp_path / "missing" / "t.svg"))
    assert nowhere.returncode == 1 and "cannot write" in nowhere.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written
    # an existing file is replaced only by a whole new picture
    kept = tmp_path / "kept.svg"
    kept.write_text("earlier")
    failed = cli(client, "timeline", "jk-nosuchthing", "-o", str(kept))
    assert failed.returncode == 1 and kept.read_text() == "earlier"


def test_cli_refuses_pictures_too_big_to_draw(
    ran: tuple[Any, str, list[JobRecord]], tmp_path: Path
) -> None:
    """``--width 100000000`` once allocated gigabytes; now a usage error naming the limit."""
    client, array_id, _records = ran
    for option, suffix in (("--width", "png"), ("--height", "png"), ("--width", "svg")):
        out = tmp_path / f"big.{suffix}"
        big = cli(client, "timeline", array_id, "-o", str(out), option, "100000000")
        assert big.returncode == 2, big.stderr
        assert big.stderr.count("\n") == 1, big.stderr
        assert option in big.stderr and "20000" in big.stderr, big.stderr
    area = cli(
        client,
        "timeline",
        array_id,
        "-o",
        str(tmp_path / "a.png"),
        "--width",
        "20000",
        "--height",
        "20000",
    )
    assert area.returncode == 2 and area.stderr.count("\n") == 1, area.stderr
    assert ".svg" in area.stderr and "pixels" in area.stderr
    assert list(tmp_path.iterdir()) == []
    edge = cli(client, "timeline", array_id, "-o", str(tmp_path / "e.svg"), "--width", "20000")
    assert edge.returncode == 0, edge.stderr
    assert 'width="20000"' in (tmp_path / "e.svg").read_text()


def test_png_without_pillow_names_the_extra(
    ran: tuple[Any, str, list[JobRecord]], tmp_path: Path
) -> None:
    """Pillow made unimportable in the CLI's process: one line naming the extra."""
    client, array_id, _records = ran
    no_pil = (
        "import sys; sys.modules['PIL'] = None; from jobkit.cli.app import main; sys.exit(main())"
    )
    made = subprocess.run(
        [
            sys.executable,
            "-c",
            no_pil,
            "--store",
            client.store.url,
            "timeline",
            array_id,
            "-o",
            str(tmp_path / "t.png"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 1, made.stderr
    assert made.stderr.count("\n") == 1 and "pip install 'jobkit[ui]'" in made.stderr
    assert not (tmp_path / "t.png").exists()


def test_ten_thousand_items_fold_into_bounded_rows(tmp_path: Path) -> None:
    """10,000 records written to a real SQLite store, drawn by the CLI."""
    store = open_store(f"sqlite:///{tmp_path}/big.db")
    base = 1_700_000_000.0
    states = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
    records = [
        JobRecord(
            id=f"jk-big{i:05d}",
            name="sweep",
            backend="local",
            state=states[0] if i % 97 else states[1 + (i // 97) % 2],
            created_at=base,
            submitted_at=base + 1,
            started_at=base + 2 + i * 0.01,
            finished_at=base + 60 + i * 0.02,
            array_id="jk-bigarray",
            array_index=i,
            host="node1",
        )
        for i in range(10_000)
    ]
    store.create(records)
    store.close()
    out = tmp_path / "big.svg"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobkit",
            "--store",
            f"sqlite:///{tmp_path}/big.db",
            "timeline",
            "jk-bigarray",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    assert out.stat().st_size < 600_000
    root = ET.fromstring(out.read_text())
    rows = [g for g in root.iter(f"{SVG}g") if g.get("class") == "items"]
    assert len(rows) == MAX_ROWS
    assert sum(int(g.get("data-count", "0")) for g in rows) == 10_000
    assert int(root.get("height", "0")) < 1400
    # the first bucket holds item 0 (FAILED: 0 % 97 == 0): folded rows show failures
    assert rows[0].get("data-index") == "0" and rows[0].get("data-state") == "FAILED"
    assert rows[1].get("data-state") == "SUCCEEDED"
    png = tmp_path / "big.png"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobkit",
            "--store",
            f"sqlite:///{tmp_path}/big.db",
            "timeline",
            "jk-bigarray",
            "-o",
            str(png),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    assert png.stat().st_size < 600_000
