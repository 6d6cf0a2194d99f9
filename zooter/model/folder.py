"""One router folder on disk, read whole: every file checked against ``config.json`` and read from one opening.

:class:`FolderFiles` is how loading reads a router folder, and how a part of the router that keeps
files (the neighbour bank, a cluster tagger, an ANN index) reads its own back: its ``save(folder)``
writes plain files into the folder being saved, every one of which the save lists in
``config.json`` with its size and sha256 (:func:`record_files`); its ``load(files, ...)`` reads
them through the :class:`FolderFiles` it is given. See :mod:`zooter.model.persistence` for the
folder's layout and docs/router-folder.md for the format.

Example:
    >>> from zooter.model.folder import FolderFiles
    >>> with FolderFiles.open("my-router") as files:  # doctest: +SKIP
    ...     files.config["experts"], len(files.read("neighbours.safetensors"))
    (['coder', 'writer'], 80312)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import Field

from zooter._io import recover_directory, save_in_progress
from zooter.config import ZooterConfig
from zooter.errors import ZooterError

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"

_ATTEMPTS = 3  # reads of a folder that another process keeps replacing, before giving up
_WAIT_FOR_SWAP_S = 5.0  # how long a load waits for a folder that a running save has set aside
_CHUNK = 1 << 20


class FileRecord(ZooterConfig):
    """One file of a router folder, as ``config.json`` lists it under ``files``.

    Attributes:
        sha256: the hex sha256 of the file's bytes.
        bytes: its size.
    """

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0, strict=True)


def check_file_name(name: str) -> str:
    """``name`` if it is a plain file name in the folder itself (no folder part, not ``.``/``..``)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or name == CONFIG_NAME:
        raise ValueError(f"{name!r} is not the name of a file in the router folder")
    return name


def file_records(value: Any) -> Any:
    """``config.json``'s ``files`` as a mapping: a list (written before checksums) lists names only."""
    if isinstance(value, list):  # it listed config.json itself too
        return {name: None for name in value if name != CONFIG_NAME}
    return value


class FolderFiles:
    """The files of one router folder, opened once and checked against ``config.json``.

    Use :meth:`open`: it reads ``config.json``, opens every file it lists and checks each against
    its recorded size and sha256, all through one handle on the folder, so every byte comes from
    the same save. When the folder was replaced during the reading (another process saved over
    it), it reads the new folder instead. Files are then read from the handles opened, never again
    by name.

    Attributes:
        folder: the router folder.
        config: ``config.json``'s content (a dict, unvalidated).
        checked: whether ``config.json`` records checksums (folders written before them do not).
        config_sha256: the sha256 of ``config.json``'s bytes: which save this is.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.config: dict[str, Any] = {}
        self.config_sha256: str | None = None
        self.checked = False
        self._records: dict[str, FileRecord | None] = {}
        self._dir_fd: int | None = None
        self._fds: dict[str, int] = {}
        self._problems: dict[str, str] = {}
        self._scratch: Path | None = None

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    @contextlib.contextmanager
    def open(cls, folder: str | Path) -> Iterator[FolderFiles]:
        """Open a router folder whole (see the class); the files stay readable inside the block.

        Raises:
            ZooterError: the folder has no ``config.json``, or it is not JSON.
        """
        files = cls._open_whole(Path(folder))
        try:
            yield files
        finally:
            files.close()

    @classmethod
    def _open_whole(cls, folder: Path) -> FolderFiles:
        for attempt in range(1, _ATTEMPTS + 1):
            wait_for_folder(folder)
            files = cls(folder)
            try:
                files._open()
            except BaseException:
                files.close()
                raise
            if not files._problems or attempt == _ATTEMPTS or not files._replaced():
                return files
            files.close()
            logger.info("%s was replaced while being read (a save over it); reading it again", folder)
        raise AssertionError("unreachable")

    def _open(self) -> None:
        try:
            if os.open in os.supports_dir_fd:
                self._dir_fd = os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            raw = self._read_by_name(CONFIG_NAME)
        except (FileNotFoundError, NotADirectoryError):  # none there, or a save swapped the folder meanwhile
            self._problems[CONFIG_NAME] = f"{self.folder} is not a router folder: expected {CONFIG_NAME}"
            return
        self._config_bytes = raw
        self.config_sha256 = hashlib.sha256(raw).hexdigest()
        path = self.folder / CONFIG_NAME
        try:
            config = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ZooterError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise ZooterError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(config, dict):
            raise ZooterError(f"{path}: expected a JSON object, got {type(config).__name__}")
        self.config = config
        listed = file_records(config.get("files"))
        if listed is None:
            return
        if not isinstance(listed, dict):
            raise ZooterError(f"{path}: field 'files' must map file names to records, got {type(listed).__name__}")
        for name, record in listed.items():
            try:
                check_file_name(name)
                self._records[name] = None if record is None else FileRecord.from_dict(record)
            except (ValueError, TypeError, AttributeError) as e:
                raise ZooterError(f"{path}: field 'files.{name}': {e}") from None
        self.checked = any(record is not None for record in self._records.values())
        for name, record in self._records.items():
            if record is not None:
                self._check(name, record)

    def _check(self, name: str, record: FileRecord) -> None:
        """Open ``name`` and compare it with ``record``; a difference is kept to raise when it is read."""
        try:
            fd = self._open_name(name)
        except FileNotFoundError:
            self._problems[name] = f"{self.folder}: {name} is missing; copy the whole router folder again"
            return
        self._fds[name] = fd
        digest, size = hashlib.sha256(), 0
        while chunk := os.pread(fd, _CHUNK, size):
            digest.update(chunk)
            size += len(chunk)
        if size != record.bytes or digest.hexdigest() != record.sha256:
            self._problems[name] = (
                f"{self.folder / name} is not the file this router was saved with ({size:,} bytes, sha256 "
                f"{digest.hexdigest()[:12]}; config.json records {record.bytes:,} bytes, sha256 "
                f"{record.sha256[:12]}): it was changed or replaced; copy the whole router folder again"
            )

    def _replaced(self) -> bool:
        """Whether the folder's path now names another folder (or nothing): a save swapped it meanwhile."""
        try:
            now = os.stat(self.folder)
        except OSError:
            return True
        if self._dir_fd is not None:
            opened = os.fstat(self._dir_fd)
            return (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino)
        try:  # no folder handles on this platform: a save writes a new config.json every time
            return (self.folder / CONFIG_NAME).read_bytes() != getattr(self, "_config_bytes", None)
        except OSError:
            return True

    def _open_name(self, name: str) -> int:
        if self._dir_fd is not None:
            return os.open(name, os.O_RDONLY, dir_fd=self._dir_fd)
        return os.open(self.folder / name, os.O_RDONLY)

    def _read_by_name(self, name: str) -> bytes:
        fd = self._open_name(name)
        try:
            return _read_fd(fd)
        finally:
            os.close(fd)

    # -- reading -------------------------------------------------------------------------------
    def problem(self, name: str) -> str | None:
        """Why ``name`` cannot be read (missing, or not the file saved), or None when it can."""
        return self._problems.get(name)

    def has(self, name: str) -> bool:
        """Whether the folder has ``name``: listed in ``config.json`` (or, in an older folder, present).

        A file listed but missing or changed counts: :meth:`read` then says what is wrong with it.
        """
        if self._records.get(name) is not None:
            return True
        if self.checked:
            return False
        try:
            os.close(self._open_name(name))
        except OSError:
            return False
        return True

    def read(self, name: str) -> bytes:
        """The bytes of ``name``, as checked against ``config.json``.

        Raises:
            ZooterError: ``name`` is missing, not the file the router was saved with, or not among
                the files ``config.json`` lists.
        """
        fd, opened = self._handle(name)
        try:
            return _read_fd(fd)
        finally:
            if opened:
                os.close(fd)

    def map(self, name: str) -> mmap.mmap | bytes:
        """``name`` mapped into memory, as checked against ``config.json`` (:meth:`read`'s bytes).

        Its pages are read from the file when first touched, so a large neighbour bank costs
        memory only where it is used. The map is copy-on-write (writing to it changes nothing on
        disk) and holds the file it was opened on, even after a save replaces the folder. An empty
        file gives empty bytes (a map cannot be empty).

        Raises:
            ZooterError: as :meth:`read`.
        """
        fd, opened = self._handle(name)
        try:
            if os.fstat(fd).st_size == 0:
                return b""
            return mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
        finally:
            if opened:
                os.close(fd)

    def open_file(self, name: str) -> BinaryIO:
        """``name`` as a file object open for reading, as checked against ``config.json``, for
        readers that stream a large file (a faiss index) rather than hold its bytes. Close it.

        Raises:
            ZooterError: as :meth:`read`.
        """
        fd, opened = self._handle(name)
        own = fd if opened else os.dup(fd)  # a duplicate shares the offset, which only this file object moves
        os.lseek(own, 0, os.SEEK_SET)
        return open(own, "rb", buffering=_CHUNK)

    def _handle(self, name: str) -> tuple[int, bool]:
        """A descriptor of ``name`` (the one checked, when listed), and whether it was opened here."""
        if name in self._problems:
            raise ZooterError(self._problems[name])
        fd = self._fds.get(name)
        if fd is not None:
            return fd, False
        if self.checked and name not in self._records:
            raise ZooterError(
                f"{self.folder}: {name} is not among the files {CONFIG_NAME} lists; copy the whole router folder again"
            )
        try:  # a folder from before checksums: opened through the same folder handle, unchecked
            return self._open_name(name), True
        except FileNotFoundError:
            raise ZooterError(f"{self.folder}: {name} is missing; copy the whole router folder again") from None

    def path(self, name: str) -> Path:
        """A private file holding :meth:`read`'s bytes of ``name``, for readers that need a path.

        It lives in a temporary folder removed when the :meth:`open` block ends.
        """
        return self.local_folder([name]) / name

    def local_folder(self, names: Sequence[str]) -> Path:
        """A private temporary folder holding :meth:`read`'s bytes of each of ``names``."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="zooter-router-"))
        for name in names:
            target = self._scratch / name
            if not target.exists():
                target.write_bytes(self.read(name))
        return self._scratch

    def where(self, name: str) -> Path:
        """The path of ``name`` in the router folder, for messages."""
        return self.folder / name

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def _read_fd(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    parts, offset = [], 0
    while offset < size and (chunk := os.pread(fd, size - offset, offset)):
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


def wait_for_folder(folder: Path) -> bool:
    """Put back a folder an interrupted save set aside; wait while a running save is swapping it in.

    Returns:
        Whether ``folder`` is a local folder (there, or being swapped in by a running save), not a
        Hub repo id: decided once, so a later save's next swap cannot make it look like one.
    """
    if folder.is_dir():
        return True
    recover_directory(folder)
    deadline = time.monotonic() + _WAIT_FOR_SWAP_S
    while True:
        saving = save_in_progress(folder)  # asked first: a save that ends meanwhile has put the folder back
        if folder.is_dir():
            return True
        if not saving or time.monotonic() >= deadline:
            return saving
        time.sleep(0.005)  # the swap is two renames: its gap is short


def record_files(folder: Path) -> dict[str, FileRecord]:
    """Every file in ``folder`` (a router folder being written) with its size and sha256, by name.

    Raises:
        ZooterError: the folder holds something that is not a plain file (parts write files only).
    """
    records = {}
    for path in sorted(folder.iterdir()):
        if path.name == CONFIG_NAME:
            continue
        if not path.is_file() or path.is_symlink():
            raise ZooterError(f"saving a router wrote {path.name}, which is not a plain file; parts write files only")
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        records[path.name] = FileRecord(sha256=digest.hexdigest(), bytes=path.stat().st_size)
    return records


__all__ = [
    "CONFIG_NAME",
    "FileRecord",
    "FolderFiles",
    "check_file_name",
    "file_records",
    "record_files",
    "wait_for_folder",
]
