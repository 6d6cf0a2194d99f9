"""The exceptions zooter raises: one base class, a few subclasses a caller can act on."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any


def name_list(names: Iterable[str], limit: int = 10) -> str:
    """``names`` written for a one-line message: the first ``limit`` of them, then how many more.

    A dataset with thousands of experts (a misread file, a wrong column) must not turn an error
    into a screenful: ``['a', 'b', ...] and 9,990 more``.
    """
    names = list(names)
    if len(names) <= limit:
        return repr(names)
    return f"{repr(names[:limit])[:-1]}, ...] and {len(names) - limit:,} more"


class ZooterError(Exception):
    """Base class of every error zooter raises on purpose."""


class ConfigError(ZooterError, ValueError):
    """A configuration value is out of range or of the wrong type."""


class DataError(ZooterError, ValueError):
    """An input file or record is malformed.

    The message names where the problem is (file, line, id, field) and what was expected, so the
    user can fix the input without reading zooter's source.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        record_id: str | None = None,
        field: str | None = None,
        value: Any = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.record_id = record_id
        self.field = field
        self.value = value
        where = []
        if self.path is not None:
            where.append(self.path if line is None else f"{self.path}:{line}")
        elif line is not None:
            where.append(f"line {line}")
        if record_id is not None:
            where.append(f"id {record_id!r}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ExpertMismatchError(DataError):
    """The experts of a router and of a dataset (or of a set of chat models) differ."""

    def __init__(self, message: str, *, missing: list[str], extra: list[str]) -> None:
        self.missing = missing
        self.extra = extra
        super().__init__(message)


class MissingDependencyError(ZooterError, ImportError):
    """An optional package is needed for this feature; the message names the extra to install."""


def import_optional(module: str, *also: str, needs: str, install: str) -> ModuleType:
    """``module``, imported where a feature uses it, or a :class:`MissingDependencyError`.

    Args:
        module: the optional module, e.g. ``"faiss"``; it is returned.
        also: its submodules the feature needs too, e.g. ``"ray.data"`` (imported after ``module``).
        needs: what needs it, as the error's first words (``"an ANN index needs faiss"``).
        install: the command that installs the extra (``"pip install 'zooter-langchain[ann]'"``).
    """
    try:
        imported = importlib.import_module(module)
        for name in also:
            importlib.import_module(name)
    except ImportError as e:
        raise MissingDependencyError(f"{needs}: {install} ({e})") from None
    return imported


__all__ = [
    "ConfigError",
    "DataError",
    "ExpertMismatchError",
    "MissingDependencyError",
    "ZooterError",
    "import_optional",
    "name_list",
]
