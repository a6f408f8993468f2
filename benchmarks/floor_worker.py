"""The child of the subprocess-per-job floor: the least a job runner can do.

A fresh interpreter imports cloudpickle, loads ``(fn, args)`` from a file,
calls it and writes the pickled result to another file (renamed into place,
so the parent never reads half a result).  Nothing else: no store, no
signing, no state tracking.  Any job system that starts a fresh Python per
job pays at least this much.
"""

from __future__ import annotations

import os
import sys

import cloudpickle


def main() -> None:
    payload_path, result_path = sys.argv[1], sys.argv[2]
    with open(payload_path, "rb") as f:
        fn, args = cloudpickle.load(f)
    result = fn(*args)
    tmp = result_path + ".tmp"
    with open(tmp, "wb") as f:
        cloudpickle.dump(result, f)
    os.replace(tmp, result_path)


if __name__ == "__main__":
    main()
