"""``ZooterToolSelectorMiddleware``: narrow an agent's tools to the ones a Zooter router picks.

For ``langchain.agents.create_agent`` (the ``agents`` extra). It does what LangChain's
``LLMToolSelectorMiddleware`` does, without the extra LLM call: before each model call it keeps only
the tools the router selects for the turn (plus ``always_include``), and passes provider tools
(plain dicts) through untouched.

The router runs once per turn: the selection is cached under the turn's last human message, so the
model calls of one tool loop reuse it and the next human message selects afresh. Where to see it:

- every ``AIMessage`` the model returns carries ``response_metadata["zooter_tools"]``:
  ``{"tools": [...offered...], "probabilities": {...}, "cached": bool}``;
- a ``zooter_tool_selection`` custom callback event (the same dict) fires whenever the router runs,
  so ``astream_events`` and LangSmith traces show it under the model node.

Example:
    >>> from langchain.agents import create_agent
    >>> from zooter_langchain import ZooterToolSelector
    >>> selector = ZooterToolSelector.from_pretrained("my-tool-router", k=2)  # doctest: +SKIP
    >>> tools = [calculator, web_search, sql_query, weather]  # doctest: +SKIP
    >>> agent = create_agent(model, tools=tools, middleware=[selector.as_middleware(tools)])  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from zooter.errors import ConfigError, MissingDependencyError
from zooter_langchain._messages import message_text
from zooter_langchain._tracing import adispatch_event, dispatch_event

try:
    from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
except ImportError as e:  # langchain-core alone has no agents
    raise MissingDependencyError(
        "ZooterToolSelectorMiddleware needs the langchain package: pip install 'zooter-langchain[agents]' "
        "(without it, use ZooterToolSelector.as_runnable())"
    ) from e

if TYPE_CHECKING:  # for annotations only: at run time the selector module imports this one, not back
    from zooter_langchain.tool_selection import ZooterToolSelector

logger = logging.getLogger(__name__)

TOOL_SELECTION_EVENT = "zooter_tool_selection"
METADATA_KEY = "zooter_tools"


@dataclass(frozen=True)
class _Turn:
    key: tuple[str, str]
    text: str
    allowed: list[str]
    probabilities: list[float] | None  # the cached router output, or None when the router must run


def _name_of(tool: Any) -> str | None:
    """A client tool's name (a BaseTool, or a plain function ``create_agent`` turns into one); None for dicts."""
    if isinstance(tool, dict):
        return None
    name = getattr(tool, "name", None) or getattr(tool, "__name__", None)
    if not isinstance(name, str):
        raise TypeError(f"cannot tell the name of tool {tool!r}")
    return name


class ZooterToolSelectorMiddleware(AgentMiddleware):
    """Agent middleware that offers the model only the tools a Zooter router selects for the turn.

    Args:
        selector: a :class:`~zooter_langchain.ZooterToolSelector` (its policy says how many tools).
        tools: the agent's tools; when given, names are checked here instead of on the first call.
        allow_subset: accept an agent that has only some of the router's tools (selection is then
            among those); by default every router tool must be an agent tool.
        cache_size: how many turns' selections to remember.

    Raises:
        ExpertMismatchError: the router and the agent's tools disagree: a router tool the agent
            lacks, an agent tool the router cannot rank (and not in ``always_include``), or an
            ``always_include`` name the agent lacks. Raised here when ``tools`` is given, else on
            the first model call.

    Example:
        >>> middleware = ZooterToolSelectorMiddleware(selector, tools=tools)  # doctest: +SKIP
        >>> agent = create_agent(model, tools=tools, middleware=[middleware])  # doctest: +SKIP
        >>> reply = agent.invoke({"messages": [("user", "Will it rain in Oslo?")]})["messages"][-1]  # doctest: +SKIP
        >>> reply.response_metadata["zooter_tools"]["tools"]  # doctest: +SKIP
        ['weather', 'web_search']
    """

    def __init__(
        self,
        selector: ZooterToolSelector,
        *,
        tools: Sequence[Any] | None = None,
        allow_subset: bool = False,
        cache_size: int = 1024,
    ) -> None:
        super().__init__()
        if cache_size < 1:
            raise ConfigError(f"cache_size must be >= 1, got {cache_size}")
        self.selector = selector
        self.allow_subset = allow_subset
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._lock = threading.Lock()
        self._checked: set[frozenset[str]] = set()
        if tools is not None:
            self._check([name for name in map(_name_of, tools) if name is not None])

    def _check(self, names: list[str]) -> None:
        key = frozenset(names)
        if key in self._checked:
            return
        self.selector.check_tools(names, allow_subset=self.allow_subset)
        self._checked.add(key)

    def add_tool(self, tool: Any, example_queries: Sequence[Any]) -> None:
        """Make a new tool selectable from a handful of requests it serves, without retraining.

        ``tool`` is the tool (or its name); give the agent the tool as well (e.g. build it again
        with the longer tool list). Selections remembered for earlier turns are dropped, so the
        next model call ranks the new tool too. See :meth:`ZooterToolSelector.add_tool`.
        """
        name = tool if isinstance(tool, str) else _name_of(tool)
        if name is None:
            raise TypeError("a provider tool given as a dict cannot be selected; give a named tool")
        with self._lock:
            self.selector.add_tool(name, example_queries)
            self._cache.clear()
            self._checked.clear()

    # -- one turn's selection ------------------------------------------------------------------
    def _turn(self, request: ModelRequest) -> _Turn | None:
        """What this call selects on, or None when there is nothing to narrow."""
        names = [name for name in map(_name_of, request.tools) if name is not None]
        if not names:
            return None
        self._check(names)
        text = self.selector.query_text(request.messages)
        if not text.strip():  # no words to route on (no human message, or images only): offer everything
            logger.debug("no query text to select tools on; offering all %d tools", len(names))
            return None
        human = next((m for m in reversed(request.messages) if isinstance(m, HumanMessage)), None)
        # create_agent gives every message an id, so a repeated question in a later turn selects afresh
        if human is not None and human.id:
            key = ("id", human.id)
        else:
            key = ("text", message_text(human) if human is not None else text)
        allowed = [name for name in self.selector.tool_names if name in names]
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
        return _Turn(key=key, text=text, allowed=allowed, probabilities=cached)

    def _route(self, turn: _Turn) -> list[float]:
        probabilities = self.selector.router.predict_proba([turn.text])[0].tolist()
        with self._lock:
            self._cache[turn.key] = probabilities
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return probabilities

    def _narrow(self, request: ModelRequest, turn: _Turn, probabilities: list[float]) -> tuple[ModelRequest, dict]:
        selection = self.selector.select_from_probabilities([probabilities], [turn.text], allowed=turn.allowed)[0]
        keep = set(selection.tools)
        tools = [t for t in request.tools if isinstance(t, dict) or _name_of(t) in keep]
        offered = [name for name in selection.tools if any(_name_of(t) == name for t in tools)]
        record = {"tools": offered, "probabilities": selection.probabilities, "cached": turn.probabilities is not None}
        return request.override(tools=tools), record

    @staticmethod
    def _tag(response: Any, record: dict[str, Any]) -> Any:
        """Put the selection into the response metadata of the model's messages."""

        def tag(message: BaseMessage) -> BaseMessage:
            if not isinstance(message, AIMessage):
                return message
            return message.model_copy(update={"response_metadata": {**message.response_metadata, METADATA_KEY: record}})

        if isinstance(response, AIMessage):
            return tag(response)
        if isinstance(response, ModelResponse):
            return replace(response, result=[tag(m) for m in response.result])
        return response  # a wrapper type from another middleware: pass it on as it is

    # -- the hooks -------------------------------------------------------------------------------
    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Any]) -> Any:
        """Narrow ``request.tools`` to the turn's selection, call the model, and tag its answer."""
        turn = self._turn(request)
        if turn is None:
            return handler(request)
        probabilities = turn.probabilities if turn.probabilities is not None else self._route(turn)
        narrowed, record = self._narrow(request, turn, probabilities)
        if not record["cached"]:
            dispatch_event(TOOL_SELECTION_EVENT, record)
        return self._tag(handler(narrowed), record)

    async def awrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[Any]]) -> Any:
        """Async :meth:`wrap_model_call`; the router runs in a worker thread, off the event loop."""
        turn = self._turn(request)
        if turn is None:
            return await handler(request)
        if turn.probabilities is not None:
            probabilities = turn.probabilities
        else:
            probabilities = await asyncio.to_thread(self._route, turn)
        narrowed, record = self._narrow(request, turn, probabilities)
        if not record["cached"]:
            await adispatch_event(TOOL_SELECTION_EVENT, record)
        return self._tag(await handler(narrowed), record)


__all__ = ["METADATA_KEY", "TOOL_SELECTION_EVENT", "ZooterToolSelectorMiddleware"]
