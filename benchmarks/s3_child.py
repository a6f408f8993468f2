"""One ``jobkit.jobs(...)`` call in its own process, for the ``s3`` workload.

    python s3_child.py ENDPOINT '{"state": "RUNNING", "limit": 50}' LINGER_S

The store comes from ``JOBKIT_STORE``.  The call runs in a fresh process so
that the client's monitor (which watches every active job that ``jobs()``
returns, and polls the store for it) cannot add requests to any other
measurement.  After the call this process GETs the counting server's mark
path, so the server can tell the call's requests from what the monitor
sends afterwards; with LINGER_S > 0 it then waits that long (holding the
returned jobs) and marks again.  It prints one line of JSON and exits at
once with ``os._exit``, so no exit handler adds requests.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.parse
import urllib.request

MARK_PATH = "/_jobkit_bench/mark"  # as in s3_server.py


def mark(endpoint: str, label: str) -> None:
    query = urllib.parse.urlencode({"label": label})
    with urllib.request.urlopen(f"{endpoint}{MARK_PATH}?{query}", timeout=30) as response:
        response.read()


def main(argv: list[str]) -> int:
    endpoint, kwargs_json, linger = argv[1], argv[2], float(argv[3])
    kwargs = json.loads(kwargs_json)
    import jobkit

    started = time.perf_counter()
    jobs = jobkit.jobs(**kwargs)
    seconds = time.perf_counter() - started
    mark(endpoint, "returned")
    if linger > 0:
        time.sleep(linger)
        mark(endpoint, "lingered")
    # The states and names as the call returned them (no further reads).
    records = [job._record for job in jobs]
    print(
        json.dumps(
            {
                "count": len(records),
                "states": sorted({r.state.value for r in records}),
                "names": [r.name for r in records],
                "seconds": seconds,
            }
        ),
        flush=True,
    )
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
