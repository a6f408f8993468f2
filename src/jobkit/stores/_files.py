"""Owner-only directories and atomically replaced blob files.

Payloads and outcomes are pickles signed with a per-user key, but they still
carry users' data, so everything here is created owner-only without touching
the process-wide umask: directories 0o700, files 0o600 (set with ``chmod``
after creation, since the umask can only remove bits).

A blob is written to a temporary file in its final directory and moved into
place with ``os.replace``: readers see the old blob or all of the new one.
There is no fsync; a machine crash may lose the newest blob but never shows
a torn one.  Reading ``readinto``\\ s a preallocated ``bytearray``: one copy,
and writable so arrays unpickled out-of-band from it are writable too.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from jobkit.errors import BlobNotFoundError, StoreError

from ._common import check_blob_key

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0o700.

    Only directories created here are chmod-ed: an existing ``/tmp`` or home
    directory keeps its mode.  Raises OSError for the caller to translate.
    """
    missing: list[Path] = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # created concurrently by another process: theirs, not ours
        os.chmod(directory, DIR_MODE)


class BlobFiles:
    """Blobs as files under one root directory, one file per key."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, key: str) -> Path:
        return self.root.joinpath(*check_blob_key(key).split("/"))

    def write(self, key: str, buffers: Iterable[memoryview]) -> None:
        target = self.path_of(key)
        temp = target.with_name(f".{target.name}.{os.urandom(6).hex()}.tmp")
        try:
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            except FileNotFoundError:
                make_private_dirs(target.parent)
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise StoreError(f"cannot write blob {key!r} at {target}: {exc.strerror}") from exc
        try:
            with open(fd, "wb") as out:  # buffered: write() never stops short
                os.fchmod(out.fileno(), FILE_MODE)
                for buf in buffers:
                    out.write(buf)
            os.replace(temp, target)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            if isinstance(exc, OSError):
                raise StoreError(f"cannot write blob {key!r} at {target}: {exc}") from exc
            raise

    def read(self, key: str) -> bytearray:
        path = self.path_of(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise BlobNotFoundError(f"no blob {key!r} (looked for {path})") from None
        except OSError as exc:
            raise StoreError(f"cannot read blob {key!r} at {path}: {exc.strerror}") from exc
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise BlobNotFoundError(f"no blob {key!r} ({path} is not a file)")
        with open(fd, "rb", buffering=0) as src:
            data = bytearray(info.st_size)
            view = memoryview(data)
            done = 0
            while done < len(data):
                count = src.readinto(view[done:])
                if not count:
                    raise StoreError(
                        f"blob {key!r} at {path} ended after {done} of {len(data)} bytes"
                    )
                done += count
        return data

    def modified(self, folder: str) -> dict[str, float]:
        """Name -> modification time of the blobs directly under ``folder``
        (temporary files of writes in progress left out)."""
        found: dict[str, float] = {}
        try:
            entries = list(os.scandir(self.root / folder))
        except (FileNotFoundError, NotADirectoryError):
            return found
        except OSError as exc:
            raise StoreError(f"cannot list blobs in {self.root / folder}: {exc.strerror}") from exc
        for entry in entries:
            name = entry.name
            if name.startswith("."):  # a write in progress, or one a kill interrupted
                if not name.endswith(".tmp") or name.count(".") < 3:
                    continue
                name = name[1:].rsplit(".", 2)[0]
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                found[name] = max(found.get(name, 0.0), info.st_mtime)
        return found

    def keys(self, prefix: str) -> list[str]:
        """Keys of the files whose key starts with ``prefix`` (temporary files
        of writes in progress left out): only the folder the prefix names is walked."""
        folder = prefix.rpartition("/")[0]
        top = os.path.join(self.root, *folder.split("/")) if folder else str(self.root)
        found: list[str] = []
        for directory, subdirs, files in os.walk(top):
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]
            relative = os.path.relpath(directory, self.root)
            base = "" if relative == "." else relative.replace(os.sep, "/") + "/"
            found += [base + f for f in files if not f.startswith(".")]
        return sorted(k for k in found if k.startswith(prefix))

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def delete(self, keys: Iterable[str]) -> None:
        """Remove blobs, with the temporary files of writes to them that a kill
        interrupted (``.NAME.RANDOM.tmp``); missing files are ignored.

        One listing per folder, then an ``unlink`` only for the files that are
        there: pruning 100,000 jobs whose blobs are mostly inline (or never
        written) would otherwise cost 200,000 failing ``unlink`` calls and as
        many ``Path`` objects.  A file written after the listing survives, as it
        would have after an ``unlink``.
        """
        wanted: dict[str, set[str]] = {}
        for key in keys:
            folder, _, name = check_blob_key(key).rpartition("/")
            wanted.setdefault(folder, set()).add(name)
        for folder, names in wanted.items():
            directory = os.path.join(self.root, *folder.split("/")) if folder else str(self.root)
            for name in _present(directory, names):
                path = os.path.join(directory, name)
                try:
                    os.unlink(path)
                except (FileNotFoundError, NotADirectoryError):
                    pass
                except OSError as exc:
                    raise StoreError(f"cannot delete blob file {path}: {exc.strerror}") from exc


def _present(directory: str, names: set[str]) -> list[str]:
    """Which of ``names`` are in ``directory``, with the temporary files that
    writes to them left (a killed writer's ``.NAME.RANDOM.tmp``)."""
    try:
        entries = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise StoreError(f"cannot list blobs in {directory}: {exc.strerror}") from exc
    found = []
    for name in entries:
        temp = name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 3
        if name in names or (temp and name[1:].rsplit(".", 2)[0] in names):
            found.append(name)
    return found
