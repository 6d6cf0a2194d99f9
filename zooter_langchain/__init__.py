"""LangChain adapter for zooter routers (``ZooterRouterRunnable`` arrives here).

It depends on :mod:`zooter`, never the other way round.
"""

from __future__ import annotations

from zooter import __version__

__all__ = ["__version__"]
