"""A seekable, read-only file over a list of buffers, so uploads never join them.

``put_blob`` receives a pickle's buffers (a header plus out-of-band arrays,
possibly hundreds of MB).  boto3 reads a request body as a file: it reads it
once for the checksum, once to sign it (over plain HTTP) and once to send it,
seeking back in between.  :class:`BufferReader` serves those reads straight
from the caller's memoryviews, in the chunk sizes boto3 asks for, so no copy
of the whole blob is ever made.  :meth:`BufferReader.window` gives a reader
over a byte range: one part of a multipart upload.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Sequence

from jobkit.errors import StoreError


class BufferReader(io.RawIOBase):
    """The concatenation of ``views`` (flat byte memoryviews) as a binary file."""

    def __init__(self, views: Sequence[memoryview]) -> None:
        super().__init__()
        self._views = [v for v in views if len(v)]
        self._starts: list[int] = []
        total = 0
        for view in self._views:
            self._starts.append(total)
            total += len(view)
        self._size = total
        self._pos = 0

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        target = memoryview(buffer).cast("B")
        done = 0
        while done < len(target) and self._pos < self._size:
            index = bisect.bisect_right(self._starts, self._pos) - 1
            view = self._views[index]
            offset = self._pos - self._starts[index]
            count = min(len(view) - offset, len(target) - done)
            target[done : done + count] = view[offset : offset + count]
            done += count
            self._pos += count
        return done

    def read(self, size: int | None = -1) -> bytes:
        remaining = max(self._size - self._pos, 0)
        count = remaining if size is None or size < 0 else min(size, remaining)
        if count:
            index = bisect.bisect_right(self._starts, self._pos) - 1
            offset = self._pos - self._starts[index]
            if offset + count <= len(self._views[index]):  # within one buffer: one copy
                self._pos += count
                return bytes(self._views[index][offset : offset + count])
        out = bytearray(count)
        self.readinto(out)
        return bytes(out)

    def window(self, start: int, end: int) -> BufferReader:
        """A new reader over bytes ``[start, end)``, sharing the buffers (no copy)."""
        if not 0 <= start <= end <= self._size:
            raise StoreError(f"byte range [{start}, {end}) is outside a {self._size}-byte blob")
        views: list[memoryview] = []
        for view, first in zip(self._views, self._starts, strict=True):
            lo, hi = max(start, first), min(end, first + len(view))
            if lo < hi:
                views.append(view[lo - first : hi - first])
        return BufferReader(views)
