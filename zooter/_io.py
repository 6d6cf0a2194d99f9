"""File helpers shared by every stage: JSONL reading with line numbers, atomic writes."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from zooter.errors import DataError, ZooterError

try:
    import fcntl
except ImportError:  # Windows: appends stay one write each, without the lock
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


def open_text(path: str | Path, mode: str = "rt") -> IO[str]:
    """Open a text file, transparently gunzipping names that end in ``.gz``."""
    path = Path(path)
    # utf-8-sig reads files with or without a byte-order mark (editors on Windows add one)
    encoding = "utf-8-sig" if "r" in mode else "utf-8"
    if path.suffix == ".gz":
        return gzip.open(path, mode, encoding=encoding)  # type: ignore[return-value]
    return open(path, mode, encoding=encoding)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file.

    Raises:
        DataError: the file is missing, a line is not valid JSON, or a line is not a JSON object.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError("is a folder; expected a JSONL file", path=path)
    if not path.is_file():
        raise DataError("no such file", path=path)
    line_no = 0
    try:
        with open_text(path) as f:
            for line_no, line in enumerate(f, start=1):
                if line.strip():
                    yield line_no, parse_json_line(line, path, line_no)
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start})", path=path, line=line_no + 1) from None
    except (gzip.BadGzipFile, EOFError, OSError) as e:
        raise DataError(f"cannot read the file ({type(e).__name__}: {e})", path=path) from None


def parse_json_line(line: str, path: Path, line_no: int) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON ({e.msg} at column {e.colno})", path=path, line=line_no) from None
    except ValueError:  # Python refuses to read an integer of more than 4300 digits
        raise DataError("a number has too many digits to read", path=path, line=line_no) from None
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=path, line=line_no)
    return obj


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def refuse_overwriting_inputs(
    outputs: Iterable[str | os.PathLike[str]], inputs: Iterable[str | os.PathLike[str] | None]
) -> None:
    """Raise before any work when an output path is one of the inputs (the same file after links).

    Raises:
        ZooterError: naming the output and the input it would replace.
    """
    given = [Path(p) for p in inputs if p is not None]
    for output in map(Path, outputs):
        for source in given:
            if _same_file(output, source):
                raise ZooterError(
                    f"the output {output} is the input {source}; writing it would replace that input, "
                    "so choose another output path"
                )


def check_writable(path: str | Path, *, folder: bool = False) -> None:
    """Raise before any work when ``path`` cannot be written as a file (or, with ``folder``, a folder).

    Raises:
        ZooterError: the path is a folder where a file is wanted (or the reverse), lies under a
            file, or its nearest existing folder is not writable (a file is created there and
            removed at once to find out).
    """
    path = Path(path)
    if path.is_dir() and not folder:
        raise ZooterError(f"{path} is a folder; expected the path of a file to write")
    if path.exists() and not path.is_dir() and folder:
        raise ZooterError(f"{path} is a file; expected a folder to write into")
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ZooterError(f"cannot write {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ZooterError(f"cannot write {path}: no permission to write in {parent}")
    try:  # what the permission bits do not tell: a read-only or special file system, a quota
        fd, probe = tempfile.mkstemp(prefix=".zooter-probe.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise ZooterError(f"cannot write {path}: {e.strerror or e} in {parent}") from None
    os.close(fd)
    os.unlink(probe)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # links and hard links, when both exist
    except OSError:
        return a.resolve() == b.resolve()


def torn_tail(path: Path) -> tuple[int, int] | None:
    """``(line number, byte offset)`` of a last line that lacks its newline, or None if there is none.

    Such a line is what an appending run killed while writing it leaves behind.
    """
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return None
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return None
        pos = end
        while pos > 0:  # walk back to the previous newline, a block at a time
            start = max(0, pos - 65536)
            f.seek(start)
            block = f.read(pos - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                pos = start + cut + 1
                break
            pos = start
        f.seek(0)
        newlines = sum(block.count(b"\n") for block in iter(lambda: f.read(min(65536, pos - f.tell())), b""))
    return newlines + 1, pos


def drop_torn_tail(path: Path) -> None:
    """Cut a last line that lacks its newline: an appending run killed while writing it.

    Files that a resumable stage appends to call this before reading them, so the torn record is
    redone and the next append starts on a line of its own. Callers check the file's other lines
    first, so a file given by mistake (a queries file as the output) is refused whole, not cut.
    """
    tail = torn_tail(path)
    if tail is None:
        return
    pos = tail[1]
    with open(path, "rb+") as f:
        end = f.seek(0, os.SEEK_END)
        logger.warning("%s: dropping an incomplete last line (%d bytes) left by an interrupted run", path, end - pos)
        f.truncate(pos)


class JsonlAppender:
    """A JSONL file that several threads and processes append to, and read back as it grows.

    Each :meth:`append` writes its lines with one ``write`` on a descriptor opened with
    ``O_APPEND``, under an exclusive lock on the file (``flock``, where the platform has it), then
    flushes them to disk (``fsync``, unless ``sync=False``). Under the lock, a last line without
    its newline can only be what a writer killed mid-line left: it is cut before the next lines go
    in (:func:`drop_torn_tail`). :meth:`read_new` returns the complete lines added since its last
    call, so a reader never sees half a line, and keeps its place in the file.

    Args:
        path: the file; created (with its folder) on the first append.
        sync: flush every append to disk (on by default; off for records one can afford to lose
            in a power cut, which still survive the process).

    Example:
        >>> log = JsonlAppender(tmp_path / "events.jsonl")  # doctest: +SKIP
        >>> log.append([{"id": "a", "n": 1}])  # doctest: +SKIP
        >>> [row for _, row in log.read_new()]  # doctest: +SKIP
        [{'id': 'a', 'n': 1}]
    """

    def __init__(self, path: str | Path, *, sync: bool = True) -> None:
        self.path = Path(path)
        self.sync = sync
        self._offset = 0
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the file's lock (this thread's and every process's) for a read-check-append sequence."""
        with self._thread_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                self._fd, self._depth = fd, 1
                tail = torn_tail(self.path)
                if tail is not None:
                    end = os.fstat(fd).st_size
                    logger.warning(
                        "%s: dropping an incomplete last line (line %d, %d bytes) left by a writer that was killed",
                        self.path,
                        tail[0],
                        end - tail[1],
                    )
                    os.ftruncate(fd, tail[1])
                    self._offset = min(self._offset, tail[1])
                yield
            finally:
                self._fd, self._depth = None, 0
                os.close(fd)  # closing releases the lock

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append ``rows``, one JSON object a line, in one write (flushed to disk with ``sync``)."""
        data = "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in rows).encode("utf-8")
        if not data:
            return
        with self.locked():
            assert self._fd is not None
            written = os.write(self._fd, data)
            while written < len(data):  # a short write (a full disk raises instead): finish the line
                written += os.write(self._fd, data[written:])
            if self.sync:
                os.fsync(self._fd)

    def read_new(self) -> list[tuple[int, dict[str, Any]]]:
        """``(byte offset, object)`` of every complete line added since the last call (all, the first time).

        Raises:
            DataError: a complete line is not a JSON object (naming the file and line offset).
        """
        with self._thread_lock:
            if not self.path.is_file():
                return []
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
            end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
            rows = []
            position = self._offset
            for raw in data[:end].splitlines(keepends=True):
                if raw.strip():
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        raise DataError(f"not UTF-8 text at byte {position}", path=self.path) from None
                    rows.append((position, _parse_line_at(text, self.path, position)))
                position += len(raw)
            self._offset += end
            return rows

    def read_at(self, offset: int) -> dict[str, Any]:
        """The object on the line that starts at byte ``offset`` (one :meth:`read_new` returned)."""
        with open(self.path, "rb") as f:
            f.seek(offset)
            line = f.readline()
        return _parse_line_at(line.decode("utf-8"), self.path, offset)


def _parse_line_at(text: str, path: Path, offset: int) -> dict[str, Any]:
    """:func:`parse_json_line` for the line at byte ``offset``; its line number is counted only for an error."""
    try:
        return parse_json_line(text, path, 0)
    except DataError:
        with open(path, "rb") as f:
            line = f.read(offset).count(b"\n") + 1
        return parse_json_line(text, path, line)


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write ``rows`` as JSONL atomically (gzip when the name ends in ``.gz``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(tmp, "wt", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder that replaces the folder ``path`` only if the block succeeds.

    An existing folder at ``path`` stays intact until the new one is complete and flushed to disk,
    and is removed only after the new one is in place. A process killed at any point leaves at
    ``path`` the old folder or the new one, or leaves the old one set aside beside it; the next
    save or load puts it back (:func:`recover_directory`), and the next save removes what killed
    saves left half-written.
    """
    path = Path(path).resolve()  # "." has no name to build a sibling from
    cwd = Path.cwd()
    if path in cwd.parents:
        raise OSError(f"cannot replace {path}: the current working folder {cwd} is inside it")
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(path)
    # the process id in the names tells a later save whether their writer is still running
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        _fsync(tmp)  # the new folder's entries are on disk before it can replace anything
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
            raise
        _fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    if path == cwd:
        os.chdir(path)  # the process stood in the folder just replaced: stand in its successor


def recover_directory(path: str | Path) -> None:
    """Undo what an :func:`atomic_directory` killed part-way left beside ``path``.

    A folder set aside (``.NAME.PID.old``) goes back to ``path`` when nothing is there; then the
    leftovers of processes that are no longer running (set-aside folders, ``.NAME.PID.*.tmp``
    folders written half-way) are removed. Those of a running process are left alone.
    """
    path = Path(path).absolute()
    leftovers = [p for p, pid in _save_leftovers(path) if not _running(pid)]
    set_aside = sorted((p for p in leftovers if p.name.endswith(".old")), key=lambda p: p.stat().st_mtime)
    if set_aside and not path.exists():
        restored = set_aside.pop()
        try:
            os.replace(restored, path)
        except OSError as e:  # e.g. a read-only folder, when loading
            logger.warning(
                "%s: an interrupted save set the folder aside as %s; cannot put it back (%s)", path, restored, e
            )
            return
        leftovers.remove(restored)
        logger.warning("%s: put back the folder that an interrupted save had set aside", path)
    for leftover in leftovers:
        shutil.rmtree(leftover, ignore_errors=True)
        logger.info("removed %s, left by an interrupted save", leftover)


def save_in_progress(path: str | Path) -> bool:
    """Whether a running process is saving over the folder ``path`` (its temporary folders are beside it)."""
    return any(_running(pid) for _, pid in _save_leftovers(Path(path).absolute()))


def _save_leftovers(path: Path) -> list[tuple[Path, int]]:
    """What :func:`atomic_directory` keeps beside ``path`` while it runs, with the process id in each name."""
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.(?:\w+\.tmp|old)")
    return [(p, int(m.group(1))) for p in path.parent.iterdir() if (m := pattern.fullmatch(p.name))]


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to another user
        return True
    return True


def settle_files(folder: Path) -> None:
    """Give every file in ``folder`` the usual mode (0666 less the umask) and flush it to disk.

    Writers differ: safetensors creates its file 0600, which another user cannot read.
    """
    mode = 0o666 & ~_umask()
    for path in folder.iterdir():
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)
            _fsync(path)


def link_or_copy(source: Path, destination: Path) -> None:
    """Put ``source`` (a file, a link or a folder) at ``destination``: hard links where possible, else copies."""
    if source.is_symlink():
        os.symlink(os.readlink(source), destination)
    elif source.is_dir():
        shutil.copytree(source, destination, symlinks=True, copy_function=_link_or_copy_file)
    else:
        _link_or_copy_file(source, destination)


def _link_or_copy_file(source: str | Path, destination: str | Path) -> None:
    try:
        os.link(source, destination)  # the same bytes, nothing to copy or flush
    except OSError:
        shutil.copy2(source, destination)
        _fsync(Path(destination))


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk (folders where the platform allows it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def _umask() -> int:
    # Reading the umask through os.umask briefly changes it for every thread; /proc does not.
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status", encoding="ascii") as f:
        return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
