"""The one reading of ``sqlite://`` URLs: the table of forms and the refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobkit.errors import ConfigError
from jobkit.stores import open_store
from jobkit.stores.sqlite_url import canonical_sqlite_url, sqlite_path

BASE = Path("/base/dir")
HOME = {"HOME": "/home/u"}


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///tmp/x.db", "/tmp/x.db"),  # the form jobkit prints: a file URL's path
        ("sqlite:////tmp/x.db", "/tmp/x.db"),  # SQLAlchemy's absolute form: same file
        ("sqlite://///tmp/x.db", "/tmp/x.db"),
        ("SQLite:///tmp/x.db", "/tmp/x.db"),
        ("sqlite:///tmp/a/../x.db", "/tmp/x.db"),
        ("sqlite:///~/x.db", "/home/u/x.db"),  # API.md's default form
        ("sqlite://~/x.db", "/home/u/x.db"),
        ("sqlite://./x.db", "/base/dir/x.db"),  # relative: an explicit dot
        ("sqlite://../data/x.db", "/base/data/x.db"),
        ("sqlite://./a/./b/../x.db", "/base/dir/a/x.db"),
        ("sqlite:////./x.db", "/x.db"),  # four slashes: absolute in both readings
    ],
)
def test_accepted_forms(url: str, path: str) -> None:
    assert sqlite_path(url, BASE, HOME) == Path(path)
    canonical = canonical_sqlite_url(url, BASE, HOME)
    assert canonical == f"sqlite://{path}"
    assert canonical_sqlite_url(canonical, Path("/elsewhere"), HOME) == canonical


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "sqlite://x.db",
            "store URL 'sqlite://x.db' is ambiguous: a URL reader takes it as the host "
            "'x.db' and no path, a path reader as the relative path 'x.db'. Write "
            "'sqlite://./x.db' for 'x.db' relative to the config file naming it (else the "
            "working directory), or 'sqlite:///x.db' for the absolute path '/x.db'",
        ),
        (
            "sqlite://data/x.db",
            "store URL 'sqlite://data/x.db' is ambiguous: a URL reader takes it as the host "
            "'data' with path '/x.db', a path reader as the relative path 'data/x.db'. Write "
            "'sqlite://./data/x.db' for 'data/x.db' relative to the config file naming it "
            "(else the working directory), or 'sqlite:///data/x.db' for the absolute path "
            "'/data/x.db'",
        ),
        (
            "sqlite:///./x.db",
            "store URL 'sqlite:///./x.db' is ambiguous: a file-URL reader takes it as the "
            "absolute path '/x.db', a SQLAlchemy reader as the relative path './x.db'. Write "
            "'sqlite://./x.db' for the relative path, or 'sqlite:///x.db' for the absolute "
            "path '/x.db'",
        ),
        (
            "sqlite:///../x.db",
            "store URL 'sqlite:///../x.db' is ambiguous: a file-URL reader takes it as the "
            "absolute path '/x.db', a SQLAlchemy reader as the relative path '../x.db'. Write "
            "'sqlite://../x.db' for the relative path, or 'sqlite:///x.db' for the absolute "
            "path '/x.db'",
        ),
    ],
)
def test_ambiguous_forms_name_both_readings_and_both_spellings(url: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        sqlite_path(url, BASE, HOME)
    assert str(info.value) == expected


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("sqlite://", "names no database file"),
        ("sqlite:///", "names no database file"),
        ("sqlite:////", "names no database file"),
        ("sqlite:///x.db?mode=ro", "take no query or fragment"),
        ("memory://", "is not a sqlite URL"),
    ],
)
def test_other_bad_urls_say_what_to_write(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        sqlite_path(url, BASE, HOME)
    assert "'sqlite:///abs/path/jobkit.db'" in str(info.value)
    assert "'sqlite://./path/jobkit.db'" in str(info.value)


def test_open_store_reads_the_same_rule_and_prints_the_canonical_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for url in (f"sqlite://{tmp_path}/a.db", f"sqlite:///{tmp_path}/a.db", "sqlite://./a.db"):
        store = open_store(url)
        try:
            assert store.url == f"sqlite://{tmp_path}/a.db"
        finally:
            store.close()
    with pytest.raises(ConfigError, match="ambiguous"):
        open_store("sqlite:///./a.db")
