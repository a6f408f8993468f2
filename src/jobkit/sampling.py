"""Sampling what a job uses while its function runs, in the worker itself.

Data flow for one job (:func:`jobkit.worker.run_job`)::

    Sampler.start()   baseline: this process's CPU times (getrusage, self + reaped
        │             children), peak-RSS mark reset (/proc/self/clear_refs)
        │  the process's sampling thread (one, kept between jobs) ──►
        │             every interval (0.1 s, doubling up to 5 s):
        │               psutil: this process and its children, recursively:
        │                 CPU user+system (+ their reaped children's), RSS
        │               NVML (jobkit.nvml), where a GPU is visible and the job asked
        │                 for one (gpus 0: NVML never loaded): util, memory, power
        │               ─► Tally (jobkit.tally: summary figures, series bounded
        │                  to MAX_POINTS)
        │             at 2 s, then every 10 s: store.update(usage=summary, final false),
        │                                      then put_blob(usage/ID, series)
    fn(*args, **kwargs)
        ▼
    Sampler.stop() ── waits out a probe or write in progress, takes the last
        ▼               probe ──► Ended (final summary + series bytes)
    the worker's terminal write carries both: the success's Change (fields and
    blobs, or the agent's hand-over), or fail()/requeue() with the series put first

Why in the worker: it is the one place every backend runs (local, Slurm,
Kubernetes, plugins), and it knows its own process tree.  A job killed with
-9 (OOM, time limit) keeps its last flushed, non-final summary.

Per-job figures are deltas from :meth:`Sampler.start`: a warm local worker
runs many jobs in one process, so process-lifetime figures (``ru_maxrss``)
would belong to earlier jobs.  Peak RSS is the highest sampled tree RSS, or
the process's own high-water mark after resetting it at the start where Linux
allows.  CPU of children that ended between samples is not lost: once
reaped, it is in their parent's children times, which are summed too.

Cost: nothing is imported and nothing is written for a job that ends before
the first sample (0.1 s): its figures come from getrusage and /proc/self at
the end, and land in the terminal write alone.  psutil is imported in the
thread, at the first sample, once per process; the thread itself is started
once per process and waits between jobs.  The thread's own CPU time is
recorded as ``sampler_cpu_seconds``, so the overhead is measured on every job.
Sampling is telemetry: a failure is one line on stderr, never the job's.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import threading
import time
from typing import Any

from jobkit.tally import Ended, Probe, Tally
from jobkit.usage import encode_series, usage_key

__all__ = ["THREAD_NAME", "Ended", "Probe", "Sampler", "Tally", "sampler_thread"]

FIRST_INTERVAL = 0.1
"""Seconds to the first sample; each next interval doubles..."""
MAX_INTERVAL = 5.0
"""...up to this (doubled again each time the series is thinned)."""
FIRST_FLUSH = 2.0
"""Seconds into the job of the first live write (shorter jobs write only their end)."""
FLUSH_EVERY = 10.0
"""Seconds between later live writes."""
POLL = 0.1
"""Longest sleep of the sampling thread between jobs that follow each other:
it finds a new or stopped job by looking, so :meth:`Sampler.start` and
:meth:`Sampler.stop` wake nothing (a trivial job pays no thread switch)."""
DEEP_SLEEP_AFTER = 10.0
"""Idle this long, the thread sleeps until the next job's start wakes it."""


class Sampler:
    """Samples this process's tree from :meth:`start` to :meth:`stop`, one job's run.

    ``store`` None: nothing is written while running (the figures come back
    from :meth:`stop` only).
    """

    def __init__(
        self,
        store: Any,
        job_id: str,
        *,
        series_always: bool = False,
        gpus: float | None = None,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.gpus = gpus
        """The GPUs the job asked for (``resources["gpus"]``; None: unknown, as
        if asked).  0: NVML is not even loaded, so a CPU job on a GPU node never
        records the node's devices; a fraction: its devices are shared."""
        self.series_always = series_always
        """Return a series even of one point: a later attempt's end must replace
        the blob an earlier attempt left (a first attempt has none to replace)."""
        self._stopped = False
        self._busy = threading.Lock()
        """Held by the thread while it probes: :meth:`stop` and a fork wait it out."""
        self._writing = threading.Lock()
        """Held by the thread while it writes live figures: :meth:`stop` waits it
        out (no live write lands after the end), a fork does not (a store slow
        to answer must not hold up the job's own ``fork``)."""
        self._tally: Tally | None = None
        self._base_cpu = 0.0
        self._start = 0.0
        self._hwm_reset = False
        self._clock0 = 0.0
        self._devices: Any = None
        self._tree: Any = None
        self._loop: _Loop | None = None
        """The sampling thread's, once it runs (None: end figures only)."""

    def start(self) -> None:
        """Start sampling; never raises.  Where the sampling thread cannot start
        (a container's ``pids.max`` reached), one line on stderr, and the job
        gets its end figures only (getrusage and /proc/self, as a short job)."""
        self._hwm_reset = _reset_peak_rss()
        self._base_cpu = _own_cpu()
        self._start = time.monotonic()
        self._tally = Tally(time.time())
        try:
            loop = _loop()
        except Exception as exc:  # telemetry: never the job's failure
            _say(f"usage sampled at the end only: {type(exc).__name__}: {exc}")
            return
        self._loop = loop
        self._clock0 = loop.cpu_clock()
        loop.take(self)

    def stop(self) -> Ended | None:
        """Stop sampling, wait out a probe or write in progress (so no live write
        lands after the end), take the last probe; None if that failed.
        Nothing wakes the thread: it finds the job stopped at its next poll."""
        tally = self._tally
        if tally is None:
            return None
        self._stopped = True
        with self._busy:
            tally = self._tally or tally
        with self._writing:
            pass
        try:
            before = time.thread_time()
            if self._tree is not None:  # the thread sampled: the end includes children
                probe = self._tree_probe(self._tree, self._devices)
            else:  # a job shorter than the first sample: no import, a few reads
                probe = self._own_probe()
            tally.add(probe)
            loop = self._loop
            thread = loop.cpu_clock() - self._clock0 if loop is not None else 0.0
            spent = thread + time.thread_time() - before
            peak = _peak_rss() if self._hwm_reset else 0
            summary = tally.summary(final=True, sampler_cpu=max(spent, 0.0), peak_rss=peak)
            keep = tally.samples > 1 or self.series_always
            series = encode_series(tally.series()) if keep else None
            return Ended(summary, series)
        except Exception as exc:  # telemetry: never the job's failure
            _say(f"usage figures lost: {type(exc).__name__}: {exc}")
            return None

    # -- in the sampling thread ------------------------------------------------------------
    def run(self, loop: _Loop) -> None:
        """Probe at growing intervals until stopped (or replaced by the next
        job); flush on schedule."""
        interval = FIRST_INTERVAL
        due = self._start + interval
        next_flush = FIRST_FLUSH
        while not self._stopped and loop.current is self:
            now = time.monotonic()
            if now < due:
                loop.nap(self, due - now)
                continue
            live: tuple[dict[str, Any], bytes] | None = None
            with self._busy:
                if self._stopped:
                    return
                try:
                    tally = self._probe()
                    if tally.last_t >= next_flush:
                        live = self._live(tally, loop)
                        next_flush = tally.last_t + FLUSH_EVERY
                except Exception as exc:
                    _say(f"usage sampling stopped: {type(exc).__name__}: {exc}")
                    return
            if live is not None:
                with self._writing:
                    if self._stopped:
                        return
                    self._flush(*live)
            interval = min(interval * 2, MAX_INTERVAL * 2**tally.thinned)
            due = min(time.monotonic() + interval, self._start + next_flush)  # flush on time

    def _probe(self) -> Tally:
        assert self._tally is not None
        if self._tree is None:  # the first sample: psutil and NVML, once per process
            import psutil

            from jobkit.nvml import visible_devices

            self._devices = visible_devices() if self.gpus is None or self.gpus > 0 else None
            if self._devices is not None:
                shared = self.gpus is not None and 0 < self.gpus < 1
                self._tally = Tally(self._tally.started_at, self._devices.devices, shared=shared)
            self._tree = psutil.Process()
        self._tally.add(self._tree_probe(self._tree, self._devices))
        return self._tally

    def _live(self, tally: Tally, loop: _Loop) -> tuple[dict[str, Any], bytes]:
        """The live summary and series, taken while the probe lock is held."""
        summary = tally.summary(final=False, sampler_cpu=loop.cpu_clock() - self._clock0)
        return summary, encode_series(tally.series())

    def _flush(self, summary: dict[str, Any], series: bytes) -> None:
        if self.store is None:
            return
        try:
            # The record first: a job pruned meanwhile refuses it, and no series is
            # left behind without a record (``jobkit prune`` removes any that are).
            self.store.update(self.job_id, usage=summary)
            self.store.put_blob(usage_key(self.job_id), series)
        except Exception as exc:  # the store's own patience has run out: try again later
            _say(f"usage not recorded: {type(exc).__name__}: {exc}")

    def _tree_probe(self, tree: Any, devices: Any) -> Probe:
        """This process and its descendants.  Their CPU and RSS first, this
        process's CPU and the time last and together: with the job's Python
        thread busy, every file read here may wait a GIL switch (5 ms)."""
        import psutil

        cpu, rss, pids = 0.0, 0, {tree.pid}
        for child in _descendants(tree):
            with contextlib.suppress(psutil.Error):  # ended meanwhile: counted once reaped
                with child.oneshot():
                    times = child.cpu_times()
                    child_rss = child.memory_info().rss
                cpu += times.user + times.system + times.children_user + times.children_system
                rss += child_rss
                pids.add(child.pid)
        gpus = devices.read(pids) if devices is not None else []
        own_rss = _own_rss()
        cpu += _own_cpu()
        t = time.monotonic() - self._start
        return Probe(t, cpu - self._base_cpu, None if own_rss is None else own_rss + rss, gpus)

    def _own_probe(self) -> Probe:
        return Probe(time.monotonic() - self._start, _own_cpu() - self._base_cpu, _own_rss())


THREAD_NAME = "jobkit-usage"


def sampler_thread() -> threading.Thread | None:
    """This process's sampling thread, if one was started: a warm worker does
    not count it as left behind by a job."""
    loop = _LOOP
    return loop.thread if loop is not None and loop.pid == os.getpid() else None


class _Loop:
    """The process's one sampling thread, kept between jobs.

    Starting a thread per job cost a trivial local job about 0.2 ms, and a
    warm worker runs thousands.  This thread is started once per process
    (again in a forked child: threads do not survive a fork) and polls for
    the current job every :data:`POLL` seconds, so starting and stopping a
    short job wakes nobody; in a long job's intervals, and idle for
    :data:`DEEP_SLEEP_AFTER`, it sleeps until the next sample is due or
    the next job starts (which then wakes it).
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.cond = threading.Condition()
        self.current: Sampler | None = None
        self.deep = False
        self.thread = threading.Thread(target=self._serve, name=THREAD_NAME, daemon=True)
        self.thread.start()
        self._clock: int | None = None
        with contextlib.suppress(AttributeError, OSError):  # Linux: the thread's CPU clock
            assert self.thread.ident is not None
            self._clock = time.pthread_getcpuclockid(self.thread.ident)

    def cpu_clock(self) -> float:
        """The sampling thread's CPU seconds so far, read from any thread (0 where
        the platform cannot: ``sampler_cpu_seconds`` is then 0)."""
        if self._clock is None:
            return 0.0
        try:
            return time.clock_gettime(self._clock)
        except OSError:
            return 0.0

    def take(self, sampler: Sampler) -> None:
        """Sample ``sampler``'s job now (unless another job of this process is
        being sampled: then it gets its end figures only)."""
        with self.cond:
            if self.current is None or self.current._stopped:
                self.current = sampler
                if self.deep:
                    self.cond.notify_all()

    def nap(self, sampler: Sampler, seconds: float) -> None:
        """Wait for ``sampler``'s next sample.  Up to :data:`POLL`, nobody wakes
        the thread; a longer wait (a long job's interval) is cut short by the
        next job's :meth:`take`, so that job is not sampled late."""
        with self.cond:
            if sampler._stopped or self.current is not sampler:
                return
            self.deep = seconds > POLL
            self.cond.wait(seconds)
            self.deep = False

    def _serve(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self.cond:
                sampler = self.current
                if sampler is None or sampler._stopped:
                    self.current = None
                    if time.monotonic() - idle_since > DEEP_SLEEP_AFTER:
                        self.deep = True
                        self.cond.wait()
                        self.deep = False
                    else:
                        self.cond.wait(POLL)
                    continue
            sampler.run(self)
            idle_since = time.monotonic()


_LOOP: _Loop | None = None
_LOOP_LOCK = threading.Lock()


def _loop() -> _Loop:
    global _LOOP
    loop = _LOOP
    if loop is None or loop.pid != os.getpid():
        with _LOOP_LOCK:
            if _LOOP is None or _LOOP.pid != os.getpid():
                _LOOP = _Loop()
            loop = _LOOP
    return loop


_HELD: Sampler | None = None
"""The sampler whose ``_busy`` this process took for a fork in progress."""


def _before_fork() -> None:
    """A job forking (``multiprocessing``'s fork) waits out a probe in progress:
    a child copied mid-probe would inherit locks held by a thread it does not
    have (an import of psutil half done: the child's own import hangs)."""
    global _HELD
    loop = _LOOP
    if loop is None or loop.pid != os.getpid() or threading.current_thread() is loop.thread:
        return
    sampler = loop.current
    if sampler is None:
        return
    sampler._busy.acquire()
    _HELD = sampler


def _after_fork_in_parent() -> None:
    global _HELD
    held, _HELD = _HELD, None
    if held is not None:
        held._busy.release()


def _after_fork_in_child() -> None:
    """The child has no sampling thread: its copy of the lock starts free."""
    global _HELD
    held, _HELD = _HELD, None
    if held is not None:
        held._busy = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


def _descendants(process: Any) -> list[Any]:
    """``process``'s children, recursively.  Read from /proc/PID/task/TID/children
    where Linux has it (a few small reads), else psutil's scan of every process
    on the machine (hundreds of reads: slow with the job's thread holding the GIL)."""
    import psutil

    if not os.path.exists(f"/proc/{process.pid}/task/{process.pid}/children"):
        return list(process.children(recursive=True))
    found: list[Any] = []
    todo = [process.pid]
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError):  # it ended meanwhile: its CPU is its parent's now
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    with open(f"/proc/{pid}/task/{task}/children", "rb") as children:
                        kids = [int(k) for k in children.read().split()]
                    todo += kids
                    for kid in kids:
                        with contextlib.suppress(psutil.Error):
                            found.append(psutil.Process(kid))
    return found


def _own_cpu() -> float:
    """This process's CPU seconds, and its reaped children's (microsecond clocks)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _own_rss() -> int | None:
    try:
        return int(_read("/proc/self/statm").split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        try:
            import psutil

            return int(psutil.Process().memory_info().rss)
        except Exception:
            return None


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0); False where not allowed."""
    try:
        fd = os.open("/proc/self/clear_refs", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, b"5")
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _peak_rss() -> int:
    """This process's RSS high-water mark since :func:`_reset_peak_rss`."""
    try:
        status = _read("/proc/self/status", 8192)
        start = status.index(b"VmHWM:") + 6
        return int(status[start : status.index(b"kB", start)]) * 1024
    except (OSError, ValueError):
        return 0


def _read(path: str, size: int = 256) -> bytes:
    """A small /proc file in one read: plain ``os`` calls, a few microseconds
    (``open()`` builds buffered objects worth more than the read itself)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def _say(text: str) -> None:
    with contextlib.suppress(Exception):
        print(f"jobkit worker: {text}", file=sys.stderr, flush=True)
