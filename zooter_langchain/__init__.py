"""LangChain adapter for zooter routers: ``ZooterRouterRunnable``, a routing chat model.

It depends on :mod:`zooter`, never the other way round. Importing this package loads neither
LangChain nor torch; each public name is imported on first use.

Example:
    >>> from zooter_langchain import ZooterRouterRunnable
    >>> model = ZooterRouterRunnable.from_pretrained("my-router", experts={...})  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zooter import __version__
from zooter._lazy import lazy_exports

_EXPORTS = {
    "ZooterRouterRunnable": "zooter_langchain.runnable",
    "ROUTE_EVENT": "zooter_langchain.runnable",
    "FakeExpertChatModel": "zooter_langchain.fake",
    "ChatModelTagger": "zooter_langchain.tagging",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from zooter_langchain.fake import FakeExpertChatModel
    from zooter_langchain.runnable import ROUTE_EVENT, ZooterRouterRunnable
    from zooter_langchain.tagging import ChatModelTagger


__getattr__, __dir__ = lazy_exports("zooter_langchain", _EXPORTS, globals())
