"""A picklable recipe for a model, built where it runs (each Ray worker loads its own copy)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelLoader:
    """How to build a model where it will run: ``function(*args, **kwargs, device=device)``.

    An engine that runs on other processes or machines ships this recipe (small, picklable) and
    each worker loads the model once, instead of shipping gigabytes of weights from the driver.

    Attributes:
        function: what builds the model, e.g. ``RewardModelScorer.from_pretrained``.
        args: its positional arguments.
        kwargs: its keyword arguments (``device`` is given at the call).
        name: what the model is called before it is loaded (a scorer's name goes in the side file).
    """

    function: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str | None = None

    def __call__(self, device: str | None = None) -> Any:
        kwargs = dict(self.kwargs)
        if device is not None:
            kwargs["device"] = device
        return self.function(*self.args, **kwargs)


__all__ = ["ModelLoader"]
