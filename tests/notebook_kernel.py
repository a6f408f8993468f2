"""A real Jupyter kernel driven cell by cell, as a notebook front end drives it.

``nbclient`` starts ``ipykernel`` (the kernel a user's Jupyter runs) and sends
each cell as an ``execute_request``; every iopub message is recorded, so a
test sees not only the outputs a saved notebook keeps but also the
``update_display_data`` messages that redraw a display in place.

Nothing of jobkit is imported here: the kernel imports jobkit itself, from
the ``PYTHONPATH`` the test gives it, like any user's kernel.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

HINT = "nbclient and ipykernel are in the dev extra: pip install -e '.[dev]'"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def require_nbclient() -> None:
    """Skip without nbclient/ipykernel, but fail under CI: CI must run these tests."""
    try:
        import ipykernel  # noqa: F401
        import nbclient  # noqa: F401
        import nbformat  # noqa: F401
    except ImportError:
        if os.environ.get("CI") or os.environ.get("JOBKIT_REQUIRE_NOTEBOOK"):
            pytest.fail(f"{HINT}; CI must run the notebook tests, not skip them")
        pytest.skip(HINT)


@dataclass
class Ran:
    """One executed cell: its saved outputs and every iopub message it caused."""

    source: str
    outputs: list[dict[str, Any]]
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return "".join(o["text"] for o in self.outputs if o.get("name") == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(o["text"] for o in self.outputs if o.get("name") == "stderr")

    @property
    def error(self) -> dict[str, Any] | None:
        return next((o for o in self.outputs if o["output_type"] == "error"), None)

    @property
    def error_text(self) -> str:
        """The traceback as the user sees it, colour codes removed."""
        error = self.error
        return ANSI.sub("", "\n".join(error["traceback"])) if error else ""

    def result(self, mime: str = "text/plain") -> str:
        """The cell's value (its last expression), as ``mime``."""
        for output in self.outputs:
            if output["output_type"] == "execute_result":
                return str(output["data"].get(mime, ""))
        raise AssertionError(f"cell has no result: {self.outputs}; source:\n{self.source}")

    def everything(self) -> str:
        """All text the cell produced, for 'no warnings anywhere' checks."""
        return "\n".join(repr(m.get("content")) for m in self.messages)

    def check(self) -> Ran:
        """Fail with the kernel's traceback if the cell raised."""
        assert self.error is None, f"cell failed:\n{self.source}\n{self.error_text}"
        return self


class Kernel:
    """One kernel, started in ``cwd`` with ``env``; ``run`` executes one cell."""

    def __init__(self, cwd: Path, env: dict[str, str], timeout: float = 120) -> None:
        import nbformat
        from nbclient import NotebookClient

        self.cwd = cwd
        self.env = env
        self.notebook = nbformat.v4.new_notebook()
        recorded: list[dict[str, Any]] = []
        self._recorded = recorded

        class Recording(NotebookClient):  # type: ignore[misc]
            def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
                recorded.append({"msg_type": msg["msg_type"], "content": msg["content"]})
                return super().process_message(msg, cell, cell_index)

        self.client = Recording(
            self.notebook,
            timeout=timeout,
            kernel_name="python3",
            allow_errors=True,
            resources={"metadata": {"path": str(cwd)}},
        )

    @contextlib.contextmanager
    def running(self) -> Iterator[Kernel]:
        env = {**os.environ, **self.env}  # the kernel's whole environment (and on restart)
        with self.client.setup_kernel(cwd=str(self.cwd), env=env):
            yield self

    def run(self, source: str) -> Ran:
        import nbformat

        cell = nbformat.v4.new_code_cell(source)
        self.notebook.cells.append(cell)
        self._recorded.clear()
        self.client.execute_cell(cell, len(self.notebook.cells) - 1)
        return Ran(source, [dict(o) for o in cell.outputs], list(self._recorded))

    def restart(self) -> None:
        """Kill and restart the kernel process: every variable is gone."""
        from jupyter_client.utils import run_sync

        run_sync(self.client.km.restart_kernel)(now=True)
        run_sync(self.client.kc.wait_for_ready)(timeout=60)
