"""``ZooterToolSelector``: a router whose experts are tools picks the few tools a request needs.

Train a router on ``(query, reward per tool)`` rows exactly as for chat models (for example from
logged agent runs, rewarding the tool that led to a good answer), then wrap it::

    selector = ZooterToolSelector(router, k=2, always_include=["web_search"])
    selector.select("What's 17% of 2,340?").tools        # ['calculator', 'unit_converter', 'web_search']

Three ways to use it: :meth:`ZooterToolSelector.select` / :meth:`~ZooterToolSelector.select_many`
directly, :meth:`~ZooterToolSelector.as_runnable` for LCEL (needs only ``langchain-core``), and
:meth:`~ZooterToolSelector.as_middleware` for ``langchain.agents.create_agent`` (needs the
``agents`` extra), where it narrows the agent's tools before each model call.

Example:
    >>> from zooter_langchain import ZooterToolSelector
    >>> selector = ZooterToolSelector.from_pretrained("my-tool-router", cumulative_p=0.9)  # doctest: +SKIP
    >>> picked = selector.select("Will it rain in Oslo tomorrow?")  # doctest: +SKIP
    >>> picked.tools, picked.probabilities["weather"]  # doctest: +SKIP
    (['weather'], 0.97)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import run_in_executor

from zooter.decide.policy import SelectionPolicy, select_top
from zooter.errors import ConfigError, ExpertMismatchError
from zooter_langchain._loading import FromPretrained
from zooter_langchain._messages import RouteOn, check_route_on, route_text

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

    from zooter_langchain.tool_middleware import ZooterToolSelectorMiddleware

logger = logging.getLogger(__name__)

ToolQuery = str | Sequence[BaseMessage] | Sequence[dict[str, Any]] | PromptValue
"""What a selector reads: a text, a chat (LangChain messages or ``{"role", "content"}`` dicts), or a prompt value."""


@dataclass(frozen=True)
class ToolSelection:
    """The tools chosen for one query.

    Attributes:
        tools: the chosen tool names: the router's picks, most probable first, then ``always_include``.
        probabilities: the router's probability of every tool it knows, in head order.
        query: the text the router read.
    """

    tools: list[str]
    probabilities: dict[str, float]
    query: str

    def to_dict(self) -> dict[str, Any]:
        return {"tools": self.tools, "probabilities": self.probabilities}


def check_tool_names(
    router_tools: Sequence[str],
    agent_tools: Sequence[str],
    always_include: Sequence[str] = (),
    *,
    allow_subset: bool = False,
) -> None:
    """Check that a router's tools and an agent's tools agree, naming every name that does not.

    Args:
        router_tools: the tools the router was trained on.
        agent_tools: the names of the tools the agent (or the caller) has.
        always_include: tools offered on every call; the only agent tools the router may not know.
        allow_subset: accept an agent that has only some of the router's tools.

    Raises:
        ExpertMismatchError: ``missing`` lists router tools the agent lacks (unless ``allow_subset``)
            and unknown ``always_include`` names; ``extra`` lists agent tools the router cannot rank.
    """
    have = set(agent_tools)
    missing = [name for name in router_tools if name not in have] if not allow_subset else []
    missing += [name for name in always_include if name not in have]
    extra = [name for name in agent_tools if name not in router_tools and name not in always_include]
    if not missing and not extra:
        return
    parts = []
    if missing:
        parts.append(f"not among the agent's tools: {missing}")
    if extra:
        parts.append(
            f"the router was not trained on {extra}, so it would never offer them "
            "(list them in always_include to offer them on every call, or retrain with them)"
        )
    hint = " (pass allow_subset=True to select among the tools the agent has)" if missing and not extra else ""
    raise ExpertMismatchError(
        f"router tools {list(router_tools)} do not match the agent's tools {list(agent_tools)}: "
        + "; ".join(parts)
        + hint,
        missing=missing,
        extra=extra,
    )


def _tool_name(tool: Any) -> str:
    name = getattr(tool, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"expected a LangChain tool with a name, got {type(tool).__name__}")
    return name


class ZooterToolSelector(FromPretrained):
    """Chooses the tools an agent needs for a query with a trained :class:`zooter.ZooterRouter`.

    The router's experts are tool names. Selection keeps the ``k`` most probable tools, or the
    fewest whose probabilities add up to ``cumulative_p`` (see :class:`zooter.decide.policy.SelectionPolicy`),
    then adds ``always_include``.

    Args:
        router: a trained router whose experts are tool names.
        k: keep the ``k`` most probable tools (3 when neither ``k`` nor ``cumulative_p`` is set).
        cumulative_p: keep the fewest tools whose probabilities reach ``p``, between ``min_k`` and
            ``max_k`` of them.
        min_k: with ``cumulative_p``, the fewest tools to keep.
        max_k: with ``cumulative_p``, the most tools to keep.
        always_include: tools offered every time (they do not count against ``k``); they may be
            tools the router does not know.
        route_on: what a chat is routed on: ``"last_human"`` (default), ``"conversation"``, or a
            function from the message list to a text.
        batch_size: queries per router forward (default: 8 on a CPU, 64 on a GPU).

    Example:
        >>> selector = ZooterToolSelector(router, k=2)  # doctest: +SKIP
        >>> [s.tools for s in selector.select_many(["Convert 5 miles to km", "Email Ana the notes"])]  # doctest: +SKIP
        [['unit_converter', 'calculator'], ['send_email', 'calendar']]
    """

    def __init__(
        self,
        router: Any,
        *,
        k: int | None = None,
        cumulative_p: float | None = None,
        min_k: int = 1,
        max_k: int | None = None,
        always_include: Sequence[str] = (),
        route_on: RouteOn = "last_human",
        batch_size: int | None = None,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        check_route_on(route_on)
        self.router = router
        self.always_include = list(dict.fromkeys(always_include))
        known = [name for name in self.always_include if name in router.experts]
        # the policy ranks the router's tools; always_include tools it does not know are appended after it
        self.policy = SelectionPolicy(k=k, cumulative_p=cumulative_p, min_k=min_k, max_k=max_k, always_include=known)
        self._unranked = [name for name in self.always_include if name not in router.experts]
        self.route_on = route_on
        self.batch_size = batch_size

    @classmethod
    def _from_router(cls, router: Any, source: str, **settings: Any) -> ZooterToolSelector:
        return cls(router, **settings)

    @property
    def tool_names(self) -> list[str]:
        """The tools the router knows, in head order."""
        return list(self.router.experts)

    def add_tool(self, name: str, example_queries: Sequence[ToolQuery], *, batch_size: int | None = None) -> None:
        """Make a new tool selectable from a handful of requests it serves, without retraining.

        The requests join the router's neighbour bank as the new tool's examples (see
        :meth:`zooter.ZooterRouter.add_expert_from_examples`): a request like them ranks the tool
        first, others rank it last. Ten examples recover most of what retraining with the tool
        would (``benchmarks/tool_lifecycle.py``). Save ``selector.router`` to keep the tool.

        Args:
            name: the tool's name, as the agent knows it.
            example_queries: requests the tool serves: texts, chats or prompt values.
            batch_size: queries per encoder forward.

        Raises:
            ConfigError: the router has no neighbour bank (a distilled router: train the tool
                router with method 'neighbours', the default), already has the tool, or no
                example is given.
        """
        if isinstance(example_queries, (str, PromptValue)):
            raise ConfigError(f"give a list of example requests for {name!r}, not one request")
        texts = [self.query_text(q) for q in example_queries]
        self.router.add_expert_from_examples(name, texts, batch_size=batch_size or self.batch_size)
        known = [tool for tool in self.always_include if tool in self.router.experts]
        self.policy = self.policy.replace(always_include=known)
        self._unranked = [tool for tool in self.always_include if tool not in self.router.experts]
        logger.info("added tool %s from %d example requests", name, len(texts))

    def __repr__(self) -> str:
        return f"ZooterToolSelector(tools={self.tool_names}, policy={self.policy.to_dict()})"

    # -- selecting ---------------------------------------------------------------------------
    def query_text(self, query: ToolQuery) -> str:
        """The text the router reads for a query."""
        if isinstance(query, str):
            return query
        messages = query.to_messages() if isinstance(query, PromptValue) else convert_to_messages(query)
        return route_text(messages, self.route_on)

    def check_tools(self, agent_tools: Sequence[str], *, allow_subset: bool = False) -> None:
        """Check that an agent's tool names agree with this selector's (see :func:`check_tool_names`)."""
        check_tool_names(self.tool_names, agent_tools, self.always_include, allow_subset=allow_subset)

    def select(self, query: ToolQuery, *, allowed: Sequence[str] | None = None) -> ToolSelection:
        """The tools for one query (see :meth:`select_many`)."""
        return self.select_many([query], allowed=allowed)[0]

    def select_many(self, queries: Sequence[ToolQuery], *, allowed: Sequence[str] | None = None) -> list[ToolSelection]:
        """The tools for each query, from one router pass over all of them.

        Args:
            queries: texts, chats or prompt values.
            allowed: choose only among these of the router's tools (``always_include`` is added
                regardless), e.g. the tools a particular agent has.

        Raises:
            ConfigError: ``allowed`` names a tool the router does not know.
        """
        if isinstance(queries, (str, PromptValue)):
            raise TypeError("select_many takes a list of queries; use select() for one")
        texts = [self.query_text(q) for q in queries]
        probs = self.router.predict_proba(texts, batch_size=self.batch_size)
        return self.select_from_probabilities(probs, texts, allowed=allowed)

    def select_from_probabilities(
        self, probabilities: Any, texts: Sequence[str], *, allowed: Sequence[str] | None = None
    ) -> list[ToolSelection]:
        """Apply the policy to router probabilities already computed (rows in ``texts`` order)."""
        selections = select_top(probabilities, self.tool_names, self.policy, allowed=allowed)
        return [
            ToolSelection(tools=[*s.selected, *self._unranked], probabilities=s.probabilities, query=text)
            for s, text in zip(selections, texts)
        ]

    # -- LangChain ---------------------------------------------------------------------------
    def as_runnable(
        self, tools: Sequence[BaseTool] | None = None, *, allow_subset: bool = False
    ) -> ZooterToolSelectorRunnable:
        """An LCEL runnable: query -> chosen tool names, or the chosen tools when ``tools`` is given.

        Args:
            tools: the tools to choose from; the runnable then returns those objects.
            allow_subset: accept ``tools`` that cover only some of the router's tools.

        Raises:
            ExpertMismatchError: ``tools`` and the router's tools do not match.
        """
        return ZooterToolSelectorRunnable(self, tools=tools, allow_subset=allow_subset)

    def as_middleware(
        self, tools: Sequence[Any] | None = None, *, allow_subset: bool = False
    ) -> ZooterToolSelectorMiddleware:
        """Agent middleware for ``langchain.agents.create_agent`` that narrows the tools per turn.

        Pass the agent's ``tools`` to have names checked now rather than on the first call. Needs
        the ``langchain`` package (``pip install 'zooter-langchain[agents]'``).
        """
        from zooter_langchain.tool_middleware import ZooterToolSelectorMiddleware

        return ZooterToolSelectorMiddleware(self, tools=tools, allow_subset=allow_subset)


class ZooterToolSelectorRunnable(Runnable[ToolQuery, list[Any]]):
    """An LCEL runnable that maps a query to the tools a :class:`ZooterToolSelector` picks.

    Without ``tools`` it returns tool names; with ``tools`` it returns the chosen tool objects, in
    selection order. ``batch``/``abatch`` select for all inputs in one router pass.

    Example:
        >>> pick = selector.as_runnable(tools=[calculator, weather, web_search])  # doctest: +SKIP
        >>> chain = pick | (lambda tools: model.bind_tools(tools))  # doctest: +SKIP
        >>> [t.name for t in pick.invoke("Is it windy in Brighton?")]  # doctest: +SKIP
        ['weather']
    """

    def __init__(
        self, selector: ZooterToolSelector, *, tools: Sequence[BaseTool] | None = None, allow_subset: bool = False
    ) -> None:
        self.selector = selector
        self.tools = {_tool_name(t): t for t in tools} if tools is not None else None
        self.allowed: list[str] | None = None
        if self.tools is not None:
            selector.check_tools(list(self.tools), allow_subset=allow_subset)
            self.allowed = [name for name in selector.tool_names if name in self.tools]

    @property
    def InputType(self) -> Any:
        return ToolQuery

    @property
    def OutputType(self) -> Any:
        return list[Any]

    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        return super().get_name(suffix, name=name or "ZooterToolSelector")

    def _pick(self, queries: list[ToolQuery]) -> list[list[Any]]:
        selections = self.selector.select_many(queries, allowed=self.allowed)
        if self.tools is None:
            return [s.tools for s in selections]
        return [[self.tools[name] for name in s.tools] for s in selections]

    def invoke(self, input: ToolQuery, config: RunnableConfig | None = None, **kwargs: Any) -> list[Any]:
        return self._call_with_config(lambda q: self._pick([q])[0], input, config)

    async def ainvoke(self, input: ToolQuery, config: RunnableConfig | None = None, **kwargs: Any) -> list[Any]:
        return (await self.abatch([input], config))[0]

    def batch(
        self,
        inputs: list[ToolQuery],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[list[Any]]:
        """Select for every input in one router pass."""
        return self._batch_with_config(self._pick, inputs, config, return_exceptions=return_exceptions)

    async def abatch(
        self,
        inputs: list[ToolQuery],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[list[Any]]:
        """:meth:`batch` with the router in a worker thread, off the event loop."""

        async def pick(queries: list[ToolQuery], config: list[RunnableConfig]) -> list[list[Any]]:
            return await run_in_executor(config[0], self._pick, queries)

        return await self._abatch_with_config(pick, inputs, config, return_exceptions=return_exceptions)


__all__ = ["ToolSelection", "ZooterToolSelector", "ZooterToolSelectorRunnable", "check_tool_names"]
