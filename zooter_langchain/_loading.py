"""One ``from_pretrained`` for every adapter class built on a saved router."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T", bound="FromPretrained")


class FromPretrained:
    """Adds ``from_pretrained(path_or_repo_id, *, revision, token, device, **kwargs)`` to a class
    built from a :class:`zooter.ZooterRouter`; a class whose constructor takes the router otherwise
    than as ``router=`` overrides :meth:`_from_router`."""

    @classmethod
    def from_pretrained(
        cls: type[T],
        path_or_repo_id: str | Path,
        *,
        revision: str | None = None,
        token: str | None = None,
        device: str | None = None,
        **kwargs: Any,
    ) -> T:
        """Load a saved router (local folder or Hub repo id); ``kwargs`` go to the constructor.

        Args:
            path_or_repo_id: a router folder, or a Hub repo id.
            revision: the Hub revision (branch, tag or commit).
            token: a Hub token, for private repos.
            device: "cpu", "cuda", ...; CUDA when present by default.
        """
        from zooter.model.router import ZooterRouter

        router = ZooterRouter.from_pretrained(path_or_repo_id, revision=revision, token=token, device=device)
        return cls._from_router(router, str(path_or_repo_id), **kwargs)

    @classmethod
    def _from_router(cls: type[T], router: Any, source: str, **kwargs: Any) -> T:
        return cls(router=router, **kwargs)  # type: ignore[call-arg]


__all__ = ["FromPretrained"]
