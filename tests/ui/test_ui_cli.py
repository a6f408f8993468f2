"""``jobkit ui`` at the command line: what it says when it cannot serve, the
warning off loopback, and that nothing of it loads with ``import jobkit``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from uiserver import ui_server


def jobkit_cli(
    *args: str, store: Path, code: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JOBKIT_STORE": f"sqlite:///{store}"}
    start = ["-c", code] if code else ["-m", "jobkit"]
    command = [sys.executable, *start, *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def test_without_the_ui_extra_it_says_what_to_install(tmp_path: Path) -> None:
    # As where starlette is not installed: the import fails (None in sys.modules).
    code = (
        "import sys; sys.modules['starlette'] = None; sys.argv[0] = 'jobkit'; "
        "from jobkit.cli.app import main; sys.exit(main())"
    )
    done = jobkit_cli("ui", "--no-browser", store=tmp_path / "jobs.db", code=code)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "pip install 'jobkit[ui]'" in done.stderr


def test_a_bad_port_is_a_usage_error(tmp_path: Path) -> None:
    done = jobkit_cli("ui", "--port", "70000", "--no-browser", store=tmp_path / "jobs.db")
    assert done.returncode == 2
    assert "70000" in done.stderr and "0-65535" in done.stderr
    assert "'--port'" in done.stderr and done.stderr.strip().count("\n") == 0


def test_a_port_in_use_is_one_line_naming_it(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = jobkit_cli("ui", "--port", str(port), "--no-browser", store=tmp_path / "jobs.db")
    assert done.returncode == 1
    assert f"127.0.0.1:{port}" in done.stderr and "--port" in done.stderr
    assert f"port {port} is in use" in done.stderr and "--host" not in done.stderr
    assert done.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("host", ["1.2.3.4", "no-such-host.invalid"])
def test_an_address_not_on_this_machine_blames_host_not_port(tmp_path: Path, host: str) -> None:
    done = jobkit_cli("ui", "--host", host, "--port", "0", "--no-browser", store=tmp_path / "j.db")
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip()
    assert line.count("\n") == 0 and host in line and "--host" in line, line
    assert "--port" not in line, line


def test_serving_beyond_loopback_warns(tmp_path: Path) -> None:
    with ui_server(f"sqlite:///{tmp_path / 'jobs.db'}", "--host", "0.0.0.0") as server:
        server.process.terminate()
        _, err = server.process.communicate(timeout=20)
    assert "Warning: serving on 0.0.0.0" in err


@pytest.mark.parametrize("module", ["jobkit", "jobkit.cli.app"])
def test_importing_jobkit_or_its_cli_loads_no_web_server(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in ('starlette', 'uvicorn', 'jobkit.ui', 'jobkit.ui.app') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
