"""The notebook as a client: real ipykernel kernels, real local agent and workers.

Each kernel starts in its own directory with an isolated store (named in a
``jobkit.toml`` there) and imports jobkit from this checkout.  Cells are sent
one at a time, as Jupyter sends them; see ``tests/notebook_kernel.py``.  The
kernels are shared by the tests of one concern to keep the module quick.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobkit
from notebook_kernel import Kernel, Ran, require_nbclient

SRC = str(Path(jobkit.__file__).resolve().parents[1])
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def store_url(directory: Path) -> str:
    return f"sqlite:///{directory}/jobkit.db"


def kernel_env() -> dict[str, str]:
    """This checkout's jobkit first; nothing from the caller's jobkit settings."""
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": SRC + (os.pathsep + path if path else "")}


def write_project(directory: Path, store: str | None) -> None:
    lines = [f'store = "{store}"'] if store else []
    lines += ['backend = "local"', "", "[local]", "cpus = 4", "idle_timeout = 10", ""]
    (directory / "jobkit.toml").write_text("\n".join(lines))


def stop_agent(store: str) -> None:
    with jobkit.use(store=store, backend="local") as client:
        client.backend("local").stop_agent()


def ids_in(store: str) -> set[str]:
    with jobkit.use(store=store) as client:
        return {job.id for job in client.jobs(limit=1000)}


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    """One kernel for the everyday-use tests, its store in a jobkit.toml."""
    require_nbclient()
    directory = tmp_path_factory.mktemp("notebook")
    store = store_url(directory)
    write_project(directory, store)
    try:
        with Kernel(directory, kernel_env()).running() as k:
            k.run("import asyncio, time, jobkit\ndef cell_square(x):\n    return x * x").check()
            k.store = store  # type: ignore[attr-defined]
            yield k
    finally:
        stop_agent(store)


def test_kernel_imports_this_checkout(kernel: Kernel) -> None:
    assert kernel.run("jobkit.__file__").check().result().strip("'").startswith(SRC)


def test_cell_defined_function_closure_and_class_run_by_value(kernel: Kernel) -> None:
    ran = kernel.run(
        """
def cell_square(x):
    return x * x

def make_scaler(k):
    def scale(x):
        return x * k
    return scale

class Adder:
    def __init__(self, k):
        self.k = k
    def __call__(self, x):
        return x + self.k

@jobkit.remote
def decorated(x):
    return cell_square(x) + 1

(
    jobkit.submit(cell_square, 7).result(timeout=60),
    jobkit.submit(make_scaler(3), 5).result(timeout=60),
    jobkit.submit(Adder(10), 4).result(timeout=60),
    decorated.submit(3).result(timeout=60),
)
"""
    ).check()
    assert ran.result() == "(49, 15, 14, 10)"


def test_map_shows_html_progress_updated_in_place_and_no_warnings(kernel: Kernel) -> None:
    ran = kernel.run(
        """
def slow_square(x):
    time.sleep(0.3)
    return x * x

sweep = jobkit.map(slow_square, range(8))
print(sweep.results(timeout=120))
"""
    ).check()
    assert ran.stdout.strip() == str([x * x for x in range(8)])
    assert ran.stderr == "", ran.stderr
    text = ran.everything()
    for noise in ("ipywidgets", "Warning", "warn"):
        assert noise not in text, text
    assert not any(m["msg_type"].startswith("comm") for m in ran.messages), "widgets were used"
    shown = [m for m in ran.messages if m["msg_type"] == "display_data"]
    updates = [m for m in ran.messages if m["msg_type"] == "update_display_data"]
    assert len(shown) == 1 and "jobkit-progress" in shown[0]["content"]["data"]["text/html"]
    display_id = shown[0]["content"]["transient"]["display_id"]
    assert updates and all(u["content"]["transient"]["display_id"] == display_id for u in updates)
    final = updates[-1]["content"]["data"]
    assert "8/8" in final["text/plain"] and "8 SUCCEEDED" in final["text/plain"]
    assert 'value="8" max="8"' in final["text/html"]
    # The saved notebook keeps one output for the progress: the last state, in place.
    progress = [o for o in ran.outputs if o["output_type"] == "display_data"]
    assert len(progress) == 1 and "8/8" in progress[0]["data"]["text/plain"]


def test_array_displays_counts_by_state(kernel: Kernel) -> None:
    ran = kernel.run(
        """
def maybe_fail(x):
    if x == 2:
        raise ValueError("two <is> & bad")
    return x

mixed = jobkit.map(maybe_fail, range(4))
mixed.wait(timeout=60)
mixed
"""
    ).check()
    assert "of 4 jobs: 3 SUCCEEDED, 1 FAILED>" in ran.result()
    page = ran.result("text/html")
    assert "jobkit-array" in page and ">SUCCEEDED</span>&nbsp;3" in page
    assert ">FAILED</span>&nbsp;1" in page
    failed = kernel.run("mixed[2]").check()
    assert failed.result().endswith("FAILED (ERROR: ValueError: two <is> & bad)>")
    page = failed.result("text/html")
    assert "two &lt;is&gt; &amp; bad" in page and "<is>" not in page
    for field in ("created", "started", "finished", "duration", "backend", "local"):
        assert field in page


def test_array_display_has_counts_and_a_timeline_with_one_group_per_item(
    kernel: Kernel,
) -> None:
    """``display(array)``: a display_data whose text/html holds the counts and
    an inline SVG timeline, one ``<g class="item">`` per item in its state."""
    import xml.etree.ElementTree as ET

    ran = kernel.run(
        """
from IPython.display import display

def odd_fails(x):
    if x % 2:
        raise ValueError(f"odd {x}")
    return x

drawn = jobkit.map(odd_fails, range(5))
drawn.wait(timeout=60)
display(drawn)
"""
    ).check()
    shown = [
        o["data"]["text/html"]
        for o in ran.outputs
        if o["output_type"] == "display_data" and "jobkit-array" in o["data"].get("text/html", "")
    ]
    assert len(shown) == 1, ran.outputs  # the array's (the wait's progress is another)
    page = shown[0]
    assert ">SUCCEEDED</span>&nbsp;3" in page and ">FAILED</span>&nbsp;2" in page
    svg = page[page.index("<svg") : page.index("</svg>") + len("</svg>")]
    root = ET.fromstring(svg)
    groups = [g for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "item"]
    assert {g.get("data-index"): g.get("data-state") for g in groups} == {
        str(i): "FAILED" if i % 2 else "SUCCEEDED" for i in range(5)
    }


def test_repr_shows_the_state_now_not_at_creation(kernel: Kernel, tmp_path: Path) -> None:
    flag = tmp_path / "started"
    ran = kernel.run(
        f"""
def wait_for_file(path, hold):
    open(path, "w").close()
    time.sleep(hold)
    return "held"

held = jobkit.submit(wait_for_file, {str(flag)!r}, 2.0)
created = repr(held)
deadline = time.monotonic() + 60
import os
while not os.path.exists({str(flag)!r}) and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.2)
(created, repr(held))
"""
    ).check()
    created, now = eval(ran.result())
    assert now.startswith(f"<Job {created.split()[1]}") and now.endswith(" RUNNING>"), now
    page = kernel.run("held._repr_html_()").check().result()
    assert "RUNNING" in page and "started" in page
    assert kernel.run("held.result(timeout=60)").check().result() == "'held'"


def test_remote_traceback_shows_the_cell_source(kernel: Kernel) -> None:
    ran = kernel.run(
        """
def cell_fails(x):
    marker_local = x + 1
    raise KeyError(f"no key {marker_local}")

jobkit.submit(cell_fails, 1).result(timeout=60)
"""
    )
    assert ran.error is not None and ran.error["ename"] == "KeyError"
    text = ran.error_text
    assert "RemoteTraceback" in text
    remote = text[text.index("RemoteTraceback") :]
    assert 'raise KeyError(f"no key {marker_local}")' in remote, text
    assert "<dynamic-code>" not in remote


def test_top_level_await(kernel: Kernel) -> None:
    ran = kernel.run("await jobkit.submit(cell_square, 9)").check()
    assert ran.result() == "81"


def test_second_handle_does_not_break_the_first(kernel: Kernel) -> None:
    """Submit in one cell, list in the next (issue 9, defect 1)."""
    kernel.run(
        "def nap(x):\n    time.sleep(1.5)\n    return x * x\n\nfirst = jobkit.submit(nap, 12)"
    ).check()
    listed = kernel.run(
        "listed = jobkit.jobs(limit=50); first.done(), first.id in {j.id for j in listed}"
    )
    assert listed.check().result() == "(False, True)"  # a second handle while it runs
    assert kernel.run("first.result(timeout=30)").check().result() == "144"


def test_cli_sees_the_notebooks_jobs(kernel: Kernel) -> None:
    ran = kernel.run("ref = jobkit.submit(cell_square, 4); ref.result(timeout=60); ref.id")
    job_id = ran.check().result().strip("'")
    listing = subprocess.run(
        [sys.executable, "-m", "jobkit", "list", "--json", "--limit", "1000"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **kernel_env(), "JOBKIT_STORE": kernel.store},  # type: ignore[attr-defined]
    )
    assert listing.returncode == 0, listing.stderr
    rows = {row["id"]: row for row in json.loads(listing.stdout)}
    assert rows[job_id]["state"] == "SUCCEEDED" and rows[job_id]["name"] == "cell_square"


# -- a kernel restart ------------------------------------------------------------


def test_job_keeps_running_through_a_kernel_restart(tmp_path: Path) -> None:
    require_nbclient()
    store = store_url(tmp_path)
    write_project(tmp_path, store)
    flag = tmp_path / "started"
    try:
        with Kernel(tmp_path, kernel_env()).running() as k:
            ran = k.run(
                f"""
import os, time, jobkit

def survive(path):
    open(path, "w").close()
    time.sleep(3)
    return os.getpid()

job = jobkit.submit(survive, {str(flag)!r})
deadline = time.monotonic() + 60
while not os.path.exists({str(flag)!r}) and time.monotonic() < deadline:
    time.sleep(0.05)
(job.id, job.state.value)
"""
            ).check()
            job_id, state = eval(ran.result())
            assert state == "RUNNING"
            old_pid = k.run("os.getpid()").check().result()
            k.restart()
            assert k.run("import os; os.getpid()").check().result() != old_pid
            assert k.run("'job' in globals()").check().result() == "False"
            again = k.run(
                f"import jobkit; again = jobkit.get({job_id!r}); again.result(timeout=60)"
            ).check()
            assert again.result().isdigit()
            assert k.run("again.state.value").check().result() == "'SUCCEEDED'"
    finally:
        stop_agent(store)


def test_a_chain_submitted_from_a_notebook_completes_after_the_kernel_shut_down(
    tmp_path: Path,
) -> None:
    """prep -> map of 3 (each gets prep's result) -> total, submitted from cells
    whose kernel is shut down while prep still waits on a file: the local agent
    holds and releases the rest; this test only reads the store."""
    require_nbclient()
    store = store_url(tmp_path)
    write_project(tmp_path, store)
    gate = tmp_path / "gate"
    try:
        with Kernel(tmp_path, kernel_env()).running() as k:
            ran = k.run(
                f"""
import os, time, jobkit

def prep(path):
    while not os.path.exists(path):
        time.sleep(0.05)
    return [1, 2, 3]

def scale(data, factor):
    return [x * factor for x in data]

def total(parts):
    return sum(sum(p) for p in parts)

data = jobkit.submit(prep, {str(gate)!r})
parts = jobkit.map(scale, [data] * 3, [1, 10, 100])
answer = jobkit.submit(total, parts)
(answer.id, answer.state.value, data.state.value)
"""
            ).check()
            answer_id, state, prep_state = eval(ran.result())
            assert state in ("PENDING", "QUEUED") and prep_state != "SUCCEEDED"
        gate.touch()  # the kernel is gone: nothing of it waits on the chain
        with jobkit.use(store=store) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                record = client.store.get(answer_id)
                if record.is_terminal:
                    break
                time.sleep(0.1)
            assert record.state is jobkit.JobState.SUCCEEDED, record
            assert client.load_outcome(record).value == 6 * 111
    finally:
        stop_agent(store)


# -- configure() in a kernel (issue 9, defect 2) --------------------------------


@pytest.fixture(scope="module")
def bare_kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    """A kernel with no store configured anywhere: only configure() names one."""
    require_nbclient()
    directory = tmp_path_factory.mktemp("configured")
    write_project(directory, None)
    stores: list[str] = []
    try:
        with Kernel(directory, kernel_env()).running() as k:
            k.run("import asyncio, jobkit\ndef triple(x):\n    return 3 * x").check()
            k.stores = stores  # type: ignore[attr-defined]
            yield k
    finally:
        for store in stores:
            stop_agent(store)


def configured(kernel: Kernel, directory: Path, *, with_await: bool = False) -> str:
    store = store_url(directory)
    kernel.stores.append(store)  # type: ignore[attr-defined]
    cell = f"jobkit.configure(store={store!r})"
    if with_await:
        cell += "\nawait asyncio.sleep(0)"
    kernel.run(cell).check()
    return store


def test_configure_holds_in_the_next_cell(bare_kernel: Kernel, tmp_path: Path) -> None:
    store = configured(bare_kernel, tmp_path)
    ran = bare_kernel.run("j = jobkit.submit(triple, 2); (j.id, j.result(timeout=60))").check()
    job_id, value = eval(ran.result())
    assert value == 6 and job_id in ids_in(store)


def test_configure_in_a_cell_with_await_holds(bare_kernel: Kernel, tmp_path: Path) -> None:
    store = configured(bare_kernel, tmp_path, with_await=True)
    ran = bare_kernel.run("j = jobkit.submit(triple, 3); (j.id, j.result(timeout=60))").check()
    job_id, value = eval(ran.result())
    assert value == 9 and job_id in ids_in(store)


def test_configure_reaches_threads_in_the_kernel(bare_kernel: Kernel, tmp_path: Path) -> None:
    store = configured(bare_kernel, tmp_path)
    ran = bare_kernel.run(
        """
from concurrent.futures import ThreadPoolExecutor
with ThreadPoolExecutor(2) as pool:
    threaded = list(pool.map(lambda x: jobkit.submit(triple, x), range(3)))
([j.id for j in threaded], [j.result(timeout=60) for j in threaded])
"""
    ).check()
    job_ids, values = eval(ran.result())
    assert values == [0, 3, 6]
    assert set(job_ids) <= ids_in(store)


# -- the example notebook ----------------------------------------------------------


def test_example_notebook_runs(tmp_path: Path) -> None:
    """examples/notebook.ipynb executes top to bottom in a fresh kernel."""
    require_nbclient()
    import nbformat
    from nbclient import NotebookClient

    store = store_url(tmp_path)
    write_project(tmp_path, store)
    notebook = nbformat.read(ROOT / "examples" / "notebook.ipynb", as_version=4)
    client = NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute(env={**os.environ, **kernel_env()})
    finally:
        stop_agent(store)
    outputs: list[dict[str, Any]] = [o for c in notebook.cells for o in c.get("outputs", [])]
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert [e["ename"] for e in errors] == ["ValueError"]  # the failure it shows, on purpose
    assert not [o for o in outputs if o.get("name") == "stderr"]
    assert any("jobkit-progress" in o.get("data", {}).get("text/html", "") for o in outputs)
    assert Ran("", outputs).stdout  # it printed its results


def test_kernel_never_loads_rich_progress(kernel: Kernel) -> None:
    """The kernel's display path never imports rich (it needs ipywidgets there)."""
    ran = kernel.run(
        "import sys\n"
        "jobkit.map(cell_square, range(2)).results(timeout=60, progress=True)\n"
        "'rich.progress' in sys.modules"
    )
    assert ran.check().result() == "False"


def test_job_display_shows_usage_and_array_display_the_aggregate_with_idle_gpus(
    kernel: Kernel,
) -> None:
    """A real CPU-burning job: its text/html carries the sampled CPU time,
    cores and peak memory.  An array item whose record then gets an idle-GPU
    summary (as the sampler writes it) makes the array's display warn about
    idle GPUs and name the item; the aggregate line counts CPU-hours."""
    ran = kernel.run(
        """
def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return seconds

burnt = jobkit.submit(burn, 1.5)
burnt.result(timeout=120)
burnt
"""
    ).check()
    page = ran.result("text/html")
    assert "cpu time" in page and "cpu cores" in page and "memory" in page, page
    cpu = float(page.split("cpu time</th>")[1].split(">", 1)[1].split(" s<", 1)[0])
    assert cpu >= 1.4, page

    kernel.run("swept = jobkit.map(burn, [0.1, 0.1, 0.1])\nswept.wait(timeout=120)").check()
    ids = json.loads(kernel.run("import json\nprint(json.dumps([j.id for j in swept]))").stdout)
    idle = {
        "wall_seconds": 30.0,
        "cpu_seconds": 3600.0,
        "mean_cpu_util": 1.0,
        "max_cpu_util": 1.0,
        "peak_rss_bytes": 100 * 2**20,
        "samples": 10,
        "final": True,
        "gpus": [{"index": 0, "name": "NVIDIA H100", "util_mean": 0.0, "util_max": 1.0}],
    }
    with jobkit.use(store=kernel.store) as client:  # type: ignore[attr-defined]
        record = client.store.get(ids[1])
        client.store.update(ids[1], usage=idle, resources={**record.resources, "gpus": 1})
    shown = kernel.run("swept").check().result("text/html")
    assert "1 item(s) with idle GPUs: " + ids[1] in shown, shown
    assert "CPU-hours over 3 sampled item(s) of 3" in shown, shown
    assert "slowest" in shown
    item = kernel.run(f"jobkit.get({ids[1]!r})").check().result("text/html")
    assert "idle_gpu: asked for 1 GPU(s)" in item and "NVIDIA H100" in item, item
