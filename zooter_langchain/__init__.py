"""LangChain adapter for zooter routers: ``ZooterRouterRunnable``, a routing chat model.

It depends on :mod:`zooter`, never the other way round. Importing this package loads neither
LangChain nor torch; each public name is imported on first use.

Example:
    >>> from zooter_langchain import ZooterRouterRunnable
    >>> model = ZooterRouterRunnable.from_pretrained("my-router", experts={...})  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zooter import __version__

_EXPORTS = {
    "ZooterRouterRunnable": "zooter_langchain.runnable",
    "ROUTE_EVENT": "zooter_langchain.runnable",
    "FakeExpertChatModel": "zooter_langchain.fake",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from zooter_langchain.fake import FakeExpertChatModel
    from zooter_langchain.runnable import ROUTE_EVENT, ZooterRouterRunnable


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'zooter_langchain' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
