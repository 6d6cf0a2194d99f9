"""The base of zooter's small typed configs: validated on construction, plain dicts in and out."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from zooter.errors import ConfigError

logger = logging.getLogger(__name__)

C = TypeVar("C", bound="ZooterConfig")


def _fields(error: ValidationError) -> list[tuple[str, Any, str]]:
    """``(field path, value, what is wrong)`` of each error, a nested config's fields under its own path.

    A check of several fields together has an empty path: its message names them.
    """
    out = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        nested = (item.get("ctx") or {}).get("error")
        if isinstance(nested, ConfigError) and getattr(nested, "fields", None):
            # a section that is itself a ZooterConfig refused its values: name them by their full path
            for field, value, msg in nested.fields:
                out.append((f"{where}.{field}" if where and field else field or where, value, msg))
        else:
            out.append((where, item.get("input"), item["msg"].removeprefix("Value error, ")))
    return out


def _describe(fields: list[tuple[str, Any, str]]) -> str:
    return "; ".join(f"{where}={value!r:.80}: {msg}" if where else msg for where, value, msg in fields)


class ZooterConfig(BaseModel):
    """A config that validates its values and names the wrong one, with what is allowed.

    Unknown keys are an error when a config is built in code (a typo should not pass silently), and
    are dropped with a warning by :meth:`from_dict`, so a folder saved by a newer version still loads.
    """

    # allow_inf_nan=False: an infinite learning rate or a NaN temperature is refused where it is set
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            fields = _fields(e)
            error = ConfigError(f"invalid {type(self).__name__}: {_describe(fields)}")
            error.fields = fields  # type: ignore[attr-defined]  # read by an enclosing config
            raise error from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as e:
            raise ConfigError(f"invalid {type(self).__name__}: {_describe(_fields(e))}") from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        return cls(**cls.known_keys(data))

    @classmethod
    def known_keys(cls, data: Any) -> Any:
        """``data`` without the keys this config does not know (dropped with a warning); a non-dict as it is."""
        if not isinstance(data, dict):
            return data
        known = {k: v for k, v in data.items() if k in cls.model_fields}
        unknown = sorted(set(data) - set(known))
        if unknown:
            logger.warning("%s: ignoring unknown keys %s (written by a newer version?)", cls.__name__, unknown)
        return known

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` applied and validated."""
        return type(self)(**{**self.to_dict(), **changes})


__all__ = ["ZooterConfig"]
