"""Files that survive crashes, full disks, concurrent writers and damaged bytes.

- `atomic_write`: a unique temporary file in the target's folder, fsync, then `os.replace`, so a
  reader sees the old file or the new one and never half of one, and two writers never share a
  temporary file; on any failure (a full disk, say) the temporary file is removed.
- `save_torch` / `load_torch`: checkpoints through `atomic_write`; every member of torch's zip
  archive carries the CRC-32 torch wrote for it, and `load_torch` checks them all before
  unpickling (``torch.load`` itself does not), so a flipped bit is refused, not trained on.
- `read_record`: a JSON record, or None when there is none; a damaged one (invalid JSON, not a
  record) is renamed to ``*.corrupt`` with a message naming it, so the caller computes it again.
- `folder_lock`: an exclusive lock on a run folder; a second process of the same run says that
  another one holds it and waits for it to finish.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

try:
    import fcntl
except ImportError:          # Windows: runs are not locked there
    fcntl = None

_UMASK = os.umask(0o022)
os.umask(_UMASK)             # read once: mkstemp makes 0600 files, written files get the usual mode


def atomic_write(path: str | Path, data: bytes | memoryview, *, what: str = "file") -> Path:
    """Write ``data`` to ``path`` atomically; ``what`` names the file in error messages."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)
            view = memoryview(data).cast("B")
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            err = OSError(f"could not write {what} {str(path)!r}: {e.strerror or e}; "
                          "the partial temporary file was removed")
            err.errno = e.errno
            raise err from e
        raise
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str | Path, obj) -> Path:
    """``obj`` as indented JSON, written with `atomic_write`."""
    return atomic_write(path, (json.dumps(obj, indent=1) + "\n").encode(), what="record")


def save_torch(obj, path: str | Path) -> Path:
    """``torch.save(obj)`` written with `atomic_write` (serialised in memory first, so that a full
    disk is reported as such rather than as a failure inside torch's zip writer)."""
    import torch
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, buffer.getbuffer(), what="checkpoint")


def verify_zip(data: bytes, name: str = "file") -> None:
    """Raise ValueError unless ``data`` is a zip archive whose every member matches its CRC-32."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise ValueError(f"{name} is not a complete zip archive ({e})") from e
    if bad is not None:
        raise ValueError(f"{name} fails its checksum: the CRC-32 of member {bad!r} does not match its "
                         "bytes (damaged on disk or in a copy)")


def load_torch(path: str | Path, map_location="cpu"):
    """``torch.load`` (weights only) of a file written by `save_torch`, its checksums verified first."""
    import torch
    data = Path(path).read_bytes()
    verify_zip(data, f"{str(path)!r}")
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)


def set_aside(path: str | Path) -> Path:
    """Rename a damaged ``path`` to ``path.corrupt`` (over an older one) and return the new name."""
    path = Path(path)
    aside = path.with_name(path.name + ".corrupt")
    with contextlib.suppress(FileNotFoundError):      # another reader set it aside first
        os.replace(path, aside)
    return aside


def read_record(path: str | Path, required: tuple[str, ...] = ("config", "metrics")) -> dict | None:
    """The JSON object at ``path``, or None when there is none.

    A file that is not valid JSON, or not an object with the ``required`` keys (a truncated or
    emptied record), is set aside as ``*.corrupt`` with a message on stderr naming it, and None is
    returned, so the caller computes the record again.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        obj = json.loads(text)
        problem = None if isinstance(obj, dict) and all(k in obj for k in required) else \
            f"it lacks {', '.join(k for k in required if not isinstance(obj, dict) or k not in obj)}"
    except ValueError as e:
        obj, problem = None, f"invalid JSON: {e}"
    if problem is None:
        return obj
    aside = set_aside(path)
    print(f"warning: record {str(path)!r} is damaged ({problem}); set aside as {aside.name}, "
          "computing it again", file=sys.stderr, flush=True)
    return None


def check_writable_folder(path: str | Path, name: str) -> None:
    """Raise ValueError unless ``path`` is a folder, or can be made one, that this process may write."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name} must be a folder, got {str(path)!r}, which is a file")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{name} {str(path)!r} cannot be made: {str(existing)!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{name} must be writable, got {str(path)!r}"
                         + ("" if existing == path else f" (its folder {str(existing)!r} is read-only)")
                         + ", which this user cannot write")


@contextlib.contextmanager
def folder_lock(folder: str | Path, *, log=None):
    """Hold an exclusive lock on ``folder`` (its ``.lock`` file) for the ``with`` block.

    When another process holds it, ``log`` (default: a line on stderr) says so once, naming the
    folder and the holder's process id, and the call waits until that process is done.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            (log or (lambda line: print(line, file=sys.stderr, flush=True)))(
                f"waiting: another run (process {holder}) holds {str(folder)!r}; this one continues "
                "when it is done")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)           # closing the file releases the lock
