"""The CLI's store URL without the configuration loader: same answer, or none.

``jobkit list`` skips pydantic when no config file or other setting can change
the store (:mod:`jobkit.cli.store_url`); these tests hold it to the loader's
answers and check the real command on both paths.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobkit.cli.store_url import OTHER_SETTINGS, store_url_without_config
from jobkit.config_loading import ENV_VARS, Overrides, load_config
from jobkit.errors import ConfigError
from jobkit.states import JobRecord, JobState
from jobkit.stores.sqlite import SQLiteStore


@pytest.fixture
def here(tmp_path: Path) -> Path:
    """A working directory with no config file above it, and a bare environment."""
    work = tmp_path / "work"
    work.mkdir()
    return work


def bare_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "HOME": str(tmp_path / "user"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "JOBKIT_HOME": str(tmp_path / "jobkit-home"),
        **extra,
    }


def loader(option: str | None, env: dict[str, str], cwd: Path) -> str:
    overrides = [Overrides("command-line option", {"store": option})] if option else []
    return load_config(overrides, cwd=cwd, environ=env).store


def test_the_settings_it_checks_are_the_loaders() -> None:
    assert {*OTHER_SETTINGS, "JOBKIT_STORE"} == set(ENV_VARS)


@pytest.mark.parametrize(
    ("option", "variable"),
    [
        (None, None),
        (None, "sqlite://./rel/jobs.db"),
        (None, "sqlite:///./ambiguous.db"),
        (None, "sqlite:///~/jobs.db"),
        ("sqlite:///abs/x.db", "sqlite:///./ignored.db"),
        ("./opt.db", None),
        ("memory://", None),
        (None, "  s3://bucket/prefix  "),
    ],
)
def test_it_agrees_with_the_loader(
    tmp_path: Path, here: Path, option: str | None, variable: str | None
) -> None:
    env = bare_env(tmp_path, **({"JOBKIT_STORE": variable} if variable else {}))
    try:
        expected: str | None = loader(option, env, here)
    except ConfigError:
        expected = None  # only the loader may say what is wrong, and where
    assert store_url_without_config(option, None, environ=env, cwd=here) == expected


def test_it_leaves_profiles_settings_and_config_files_to_the_loader(
    tmp_path: Path, here: Path
) -> None:
    env = bare_env(tmp_path)
    assert store_url_without_config(None, None, environ=env, cwd=here) is not None
    assert store_url_without_config(None, "gpu", environ=env, cwd=here) is None
    for name in OTHER_SETTINGS:
        assert store_url_without_config(None, None, environ={**env, name: "x"}, cwd=here) is None
    nested = here / "a" / "b"
    nested.mkdir(parents=True)
    (here / "pyproject.toml").write_text("[project]\nname = 'unrelated'\n")
    assert store_url_without_config(None, None, environ=env, cwd=nested) is not None
    (here / "pyproject.toml").write_text("[tool.jobkit]\nstore = 'memory://'\n")
    assert store_url_without_config(None, None, environ=env, cwd=nested) is None
    (here / "pyproject.toml").unlink()
    (here / "a" / "jobkit.toml").write_text("")
    assert store_url_without_config(None, None, environ=env, cwd=nested) is None
    (here / "a" / "jobkit.toml").unlink()
    user = tmp_path / "xdg" / "jobkit" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text("")
    assert store_url_without_config(None, None, environ=env, cwd=nested) is None


def _list(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``jobkit list`` in a child, reporting whether it loaded pydantic."""
    code = (
        "import sys; sys.argv = ['jobkit', 'list']\n"
        "from jobkit.cli.app import main\n"
        "code = main()\n"
        "print('PYDANTIC', 'pydantic' in sys.modules, file=sys.stderr); sys.exit(code)\n"
    )
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("JOBKIT_")}, **env}
    return subprocess.run(
        [sys.executable, "-c", code], env=full, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def _one_job(path: Path, job_id: str) -> None:
    store = SQLiteStore(path)
    store.create(
        [JobRecord(id=job_id, name="n", backend="local", state=JobState.SUCCEEDED, created_at=1.0)]
    )
    store.close()


def test_list_skips_pydantic_only_when_no_config_file_could_name_the_store(
    tmp_path: Path, here: Path
) -> None:
    _one_job(tmp_path / "env.db", "jk-from-env")
    _one_job(tmp_path / "file.db", "jk-from-file")
    env = bare_env(tmp_path, JOBKIT_STORE=f"sqlite:///{tmp_path}/env.db")
    done = _list(env, here)
    assert done.returncode == 0, done.stderr
    assert "jk-from-env" in done.stdout and "PYDANTIC False" in done.stderr

    # A project file's profile can name another store: the loader decides.
    (here / "jobkit.toml").write_text(
        f"profile = 'mine'\n[profiles.mine]\nstore = 'sqlite:///{tmp_path}/file.db'\n"
    )
    no_variable = {k: v for k, v in env.items() if k != "JOBKIT_STORE"}
    done = _list(no_variable, here)
    assert done.returncode == 0, done.stderr
    assert "jk-from-file" in done.stdout and "PYDANTIC True" in done.stderr

    # A bad setting the command does not use is still reported, as before.
    done = _list({**env, "JOBKIT_POLL_INTERVAL": "soon"}, tmp_path)
    assert done.returncode == 1 and "JOBKIT_POLL_INTERVAL" in done.stderr
