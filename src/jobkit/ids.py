"""Job ids: short, sortable by creation time, unique without coordination."""

from __future__ import annotations

import secrets
import time

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_job_id() -> str:
    """``jk-`` + 9 chars of millisecond time + 5 random: sortable, short, unique."""
    value = int(time.time() * 1000)
    chars = []
    for _ in range(9):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    rand = secrets.randbits(25)
    for _ in range(5):
        rand, digit = divmod(rand, 32)
        chars.insert(9, _CROCKFORD[digit])
    return "jk-" + "".join(reversed(chars[:9])) + "".join(chars[9:])
