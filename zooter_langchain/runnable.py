"""``ChatZooterRouter``: a chat model that answers each call with the expert a router picks.

``ZooterRouterRunnable`` is the same class under its earlier name, kept as an alias.

One call, from ``invoke`` to the chosen expert, in three steps: LangChain's ``BaseChatModel``
calls :meth:`ChatZooterRouter._generate` (or ``_agenerate``, ``_stream``, ``_astream``), which
makes a :class:`_Plan` (the router's :class:`~zooter.decide.decision.RouteDecision`, the fallback
candidates it ranks, the call's tools, the child callbacks) and hands it to
:meth:`ChatZooterRouter._dispatch`, which calls the experts in order. The decision is the one
``router.route`` returns, unchanged; it is serialised once, into the answer's metadata and the
``zooter_route`` event.

Example:
    >>> from langchain_core.prompts import ChatPromptTemplate
    >>> from langchain_core.output_parsers import StrOutputParser
    >>> from zooter_langchain import ChatZooterRouter
    >>> model = ChatZooterRouter.from_pretrained(  # doctest: +SKIP
    ...     "my-router", experts={"gpt-4o": ChatOpenAI(model="gpt-4o"), "claude": ChatAnthropic(model=...)}
    ... )
    >>> chain = ChatPromptTemplate.from_template("{question}") | model | StrOutputParser()  # doctest: +SKIP
    >>> chain.invoke({"question": "Prove that sqrt(2) is irrational"})  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, cast

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
    adispatch_custom_event,
    dispatch_custom_event,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.runnables.config import get_config_list, get_executor_for_config, run_in_executor
from langchain_core.runnables.utils import gather_with_concurrency
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, field_validator

from zooter.data import Query, QueryVector, query_text
from zooter.decide.costs import check_cost_weight
from zooter.decide.decision import RouteDecision
from zooter.decide.explore import ExploreMethod, Explorer
from zooter.decide.policy import check_allowed, check_max_cost
from zooter.errors import ExpertMismatchError, ZooterError, name_list
from zooter_langchain._loading import FromPretrained
from zooter_langchain._messages import RouteOn, route_query
from zooter_langchain._tracing import aemit, child_callbacks, emit, ls_params, model_name, stream_run

logger = logging.getLogger(__name__)

ROUTE_EVENT = "zooter_route"
# A batch routes all its inputs in one pass, then runs each input's call with this set to
# (the model, its decision); _plan takes it from here. Not a keyword argument: those end up in the
# run's invocation params and in the LLM cache key.
_BATCH_DECISION: ContextVar[tuple[Any, RouteDecision] | None] = ContextVar("zooter_batch_decision", default=None)


@dataclass(frozen=True)
class _RouteOptions:
    """How one call is routed, read from its keyword arguments; the other arguments go to the expert.

    Attributes:
        allowed_experts: choose only among these (``invoke(..., allowed_experts=[...])``).
        force_expert: answer with this expert, still reporting the router's view.
        cost_weight: λ of the cost-aware decision for this call (``invoke(..., cost_weight=...)``).
        max_cost: leave out experts expected to cost more than this, in USD (``invoke(..., max_cost=...)``).
    """

    allowed_experts: list[str] | None = None
    force_expert: str | None = None
    cost_weight: float | None = None
    max_cost: float | None = None

    @classmethod
    def split(cls, kwargs: Mapping[str, Any]) -> tuple[_RouteOptions, dict[str, Any]]:
        """The routing options in ``kwargs``, and the other arguments."""
        rest = dict(kwargs)
        options = cls(
            allowed_experts=rest.pop("allowed_experts", None),
            force_expert=rest.pop("force_expert", None),
            cost_weight=rest.pop("cost_weight", None),
            max_cost=rest.pop("max_cost", None),
        )
        return options, rest


def _split_tools(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``bind_tools`` arguments of a call (empty without tools), and the other arguments."""
    rest = dict(kwargs)
    tools = rest.pop("tools", None)
    tool_choice = rest.pop("tool_choice", None)
    options = dict(rest.pop("tool_options", None) or {})
    if not tools:
        return {}, rest
    if tool_choice is not None:
        options["tool_choice"] = tool_choice
    return {"tools": tools, **options}, rest


@dataclass
class _Plan:
    """One call, decided once: the route, the experts to try in order, and how to call them.

    Attributes:
        decision: the router's decision for this call.
        query: the query the decision was made on, as the router read it.
        candidates: the chosen expert, then (with fallback) the next ones in the decision's ranking.
        tools: this call's ``bind_tools`` arguments, bound on whichever expert runs.
        children: callbacks under which the expert's run nests (None: no run to nest in).
        kwargs: the call's other arguments, passed on to the expert.
        exceptions_to_handle: the errors after which the next candidate is tried.
        fallback: whether the call falls back at all (``fallback`` and ``max_fallbacks`` > 0).
        attempts: the candidates that failed, with their errors.
    """

    decision: RouteDecision
    query: Query
    candidates: list[str]
    tools: dict[str, Any]
    children: Any
    kwargs: dict[str, Any]
    exceptions_to_handle: tuple[type[BaseException], ...]
    fallback: bool = False
    attempts: list[dict[str, str]] = field(default_factory=list)

    @property
    def config(self) -> RunnableConfig:
        return {"callbacks": self.children}

    def failed(self, name: str, error: BaseException, *, started: bool) -> BaseException | None:
        """Record that ``name`` failed; None when the next candidate may try, else the error to raise.

        ``error`` itself surfaces when ``name`` already sent output (streamed tokens cannot be
        taken back) or fallback was not asked for; when every expert the decision ranks has failed,
        a :class:`~zooter.errors.ZooterError` says so, and why no other expert may answer.
        """
        if started:
            return error
        self.attempts.append({"expert": name, "error": f"{type(error).__name__}: {error}"})
        index = self.candidates.index(name)
        if index < len(self.candidates) - 1:
            logger.warning("expert %s failed (%s); falling back to %s", name, error, self.candidates[index + 1])
            return None
        if not self.fallback or len(self.candidates) < len(self.decision.ranking):
            return error  # no fallback asked for, or max_fallbacks stopped it: the expert's own error
        tried = "; ".join(f"{a['expert']} ({a['error']})" for a in self.attempts)
        return ZooterError(f"every expert this call may use failed: {tried}; {self._none_left()}")

    def _none_left(self) -> str:
        """Why no other expert may answer: the allow-list, or the budget."""
        decision = self.decision
        others = [name for name in decision.probabilities if name not in decision.ranking]
        costs, budget = decision.costs, decision.max_cost
        dear = [name for name in others if costs is not None and budget is not None and costs[name] > budget]
        parts = []
        if dear:
            parts.append(f"{name_list(dear)} cost more than max_cost={budget:.4g} USD")
        if len(dear) < len(others):
            parts.append(f"{name_list([n for n in others if n not in dear])} are not allowed")
        return "no other expert is left to fall back on" + (f" ({'; '.join(parts)})" if parts else "")

    def record(self, answered_by: str) -> dict[str, Any]:
        """What an answer from ``answered_by`` carries in ``response_metadata["zooter"]``: the
        decision, and who answered after which failed attempts."""
        decision = self.decision
        return {
            **decision.to_dict(),
            "expert": answered_by,
            "routed_to": decision.expert,
            "reason": decision.reason if answered_by == decision.expert else "fallback",
            "expected_reward": (decision.expected_rewards or {}).get(answered_by),
            "expected_cost": (decision.costs or {}).get(answered_by),
            "attempts": self.attempts,
        }


class ChatZooterRouter(BaseChatModel, FromPretrained):
    """A chat model that routes each call to one of several expert chat models.

    A trained :class:`zooter.ZooterRouter` reads the query (by default the last human message) and
    picks the expert most likely to answer it best; only that expert runs. Every answer carries the
    router's :class:`~zooter.decide.decision.RouteDecision` in ``response_metadata["zooter"]`` (its
    ``to_dict()``: ``id``, ``reason``, every expert's probability, expected reward, cost and score,
    the ``ranking`` fallbacks follow), with who answered (``expert``), the rule's choice
    (``routed_to``), that expert's expected reward and cost, and any failed fallback ``attempts``;
    a ``zooter_route`` custom callback event carries the decision. The expert's run nests inside
    this model's run in traces, with the expert's own model name.

    ``ZooterRouterRunnable`` is this class under its earlier name (an alias, kept for existing code).
    ``ChatZooterRouter.from_pretrained(folder_or_hub_id, experts=..., **settings)`` loads the router.

    Args:
        experts: expert name -> chat model; names must match the router's experts.
        router: a trained :class:`zooter.ZooterRouter`.
        route_on: what to route on: ``"last_human"`` (default), ``"conversation"``, or a function
            from the message list to a text.
        default_expert: the expert for calls with no text to route on (e.g. images only); by
            default such calls are routed like an empty query.
        fallback: when the chosen expert raises, try the next most probable ones.
        max_fallbacks: how many other experts fallback may try.
        exceptions_to_handle: the errors fallback recovers from, as in ``Runnable.with_fallbacks``
            (default: any ``Exception``); others surface at once.
        allowed_experts: choose only among these (per call: ``invoke(..., allowed_experts=[...])``).
        cost_weight: λ of the cost-aware decision, ``argmax expected reward - λ * cost`` (needs a
            router with prices, see :meth:`zooter.ZooterRouter.set_costs`); None (default): the
            router's own, calibrated when it was trained with a cost target (per call:
            ``invoke(..., cost_weight=...)``).
        max_cost: a per-query budget in USD: experts expected to cost more are left out, and when
            none fits, the cheapest answers (per call: ``invoke(..., max_cost=...)``).
        force_expert: always use this expert, still reporting the router's probabilities (per call:
            ``invoke(..., force_expert="name")``), e.g. for A/B checks.
        allow_subset: accept ``experts`` that cover only some of the router's experts; the others
            are never chosen.
        batch_size: queries per router forward in ``batch`` (default: the router's
            ``default_batch_size``, 8 on a CPU and 64 on a GPU).
        explore: the share of calls sent to another expert the decision could choose (allowed,
            within ``max_cost``), so feedback reaches experts the router does not favour; such
            answers say ``reason: "explore"``, and every answer's ``propensity`` is the
            probability with which its expert was picked (see :class:`zooter.decide.explore.Explorer`).
        explore_method: how the other expert is drawn: ``"uniform"``, or ``"uncertainty"`` (in
            proportion to its chance of beating the rule's choice; see :mod:`zooter.decide.explore`).
        explore_seed: seeds the exploration draws (None: from the system), for reproducible runs.
        feedback_log: a :class:`~zooter_langchain.feedback.FeedbackLog` the router writes each
            answer's decision to (id, query, answering expert, propensity), so an outcome can be
            recorded later against the answer or its id, from any process.

    Example:
        >>> model = ChatZooterRouter(router=router, experts={"coder": coder, "writer": writer})  # doctest: +SKIP
        >>> reply = model.invoke("Fix this segfault in my C code")  # doctest: +SKIP
        >>> reply.response_metadata["zooter"]["expert"]  # doctest: +SKIP
        'coder'
    """

    experts: dict[str, Any]
    router: Any = Field(exclude=True)
    route_on: RouteOn = "last_human"
    default_expert: str | None = None
    fallback: bool = False
    max_fallbacks: int = Field(default=2, ge=0)
    exceptions_to_handle: tuple[type[BaseException], ...] = (Exception,)
    allowed_experts: list[str] | None = None
    cost_weight: float | None = None
    max_cost: float | None = None
    force_expert: str | None = None
    allow_subset: bool = False
    batch_size: int | None = Field(default=None, ge=1)
    explore: float = Field(default=0.0, ge=0.0, lt=1.0)
    explore_method: ExploreMethod = "uniform"
    explore_seed: int | None = None
    feedback_log: Any = Field(default=None, exclude=True)

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _explorer: Explorer = PrivateAttr()

    @field_validator("cost_weight")
    @classmethod
    def _cost_weight(cls, value: float | None) -> float | None:
        return None if value is None else check_cost_weight(value)

    @field_validator("max_cost")
    @classmethod
    def _max_cost(cls, value: float | None) -> float | None:
        return check_max_cost(value)

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        # checked here rather than in a pydantic validator, which would wrap the error in a
        # ValidationError and hide the missing/extra lists from the caller
        self._check_experts()
        self._explorer = Explorer(self.explore, method=self.explore_method, seed=self.explore_seed)

    def reload_router(self) -> bool:
        """Route with the router as its folder holds it now, when a save has replaced it since it
        was loaded (``zooter update``, ``add-expert``, ``remove-expert`` write one): see
        :meth:`zooter.ZooterRouter.reloaded`, which shares the encoder when it is the same. Calls
        under way finish on the router they started with. Call it from a timer or after an update.

        Returns:
            Whether the router changed.

        Raises:
            ExpertMismatchError: the new router's experts do not match the chat models (an expert
                added or retired): the current router is kept; build a new ``ChatZooterRouter``.
            ConfigError: the router was not loaded from a local folder.
        """
        router = self.router.reloaded()
        if router is self.router:
            return False
        self._check_experts(router)
        self.router = router
        return True

    def _check_experts(self, router: Any = None) -> None:
        router_experts = list((self.router if router is None else router).experts)
        missing = [name for name in router_experts if name not in self.experts]
        extra = [name for name in self.experts if name not in router_experts]
        if extra or (missing and not self.allow_subset) or not self.experts:
            parts = []
            if missing:
                parts.append(f"no chat model for router experts {name_list(missing)}")
            if extra:
                parts.append(f"the router does not know experts {name_list(extra)}")
            hint = " (pass allow_subset=True to route among only some experts)" if missing and not extra else ""
            raise ExpertMismatchError(
                "experts do not match the router: " + "; ".join(parts) + hint, missing=missing, extra=extra
            )
        for name in (self.default_expert, self.force_expert, *(self.allowed_experts or [])):
            if name is not None and name not in self.experts:
                raise ExpertMismatchError(
                    f"{name!r} is not one of the experts {list(self.experts)}", missing=[name], extra=[]
                )
        check_allowed(self.allowed_experts, list(self.experts), what="allowed_experts")  # an empty list too

    # -- LangChain's chat-model hooks: plan, then dispatch ---------------------------------------
    @property
    def _llm_type(self) -> str:
        return "zooter-router"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "experts": {name: model_name(model, name) for name, model in self.experts.items()},
            "route_on": self.route_on if isinstance(self.route_on, str) else getattr(self.route_on, "__name__", "fn"),
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        # The run starts before the route is known; the expert's own run, nested inside, reports its model.
        # A per-call model override, passed on to the expert, names the model.
        return ls_params(kwargs["model"] if isinstance(kwargs.get("model"), str) else "zooter-router", stop)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        plan = self._plan(messages, run_manager, kwargs)
        ((name, message),) = self._dispatch(plan, messages, stop)
        return ChatResult(generations=[ChatGeneration(message=self._tagged(message, plan, name))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        plan = await self._aplan(messages, run_manager, kwargs)
        ((name, message),) = [answer async for answer in self._adispatch(plan, messages, stop)]
        return ChatResult(generations=[ChatGeneration(message=self._tagged(message, plan, name))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        plan = self._plan(messages, run_manager, kwargs)
        for i, (name, chunk) in enumerate(self._dispatch(plan, messages, stop, stream=True)):
            yield self._chunk(chunk, plan, name, first=i == 0)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        plan = await self._aplan(messages, run_manager, kwargs)
        first = True
        async for name, chunk in self._adispatch(plan, messages, stop, stream=True):
            yield self._chunk(chunk, plan, name, first=first)
            first = False

    # -- the plan: route once ----------------------------------------------------------------------
    def _plan(self, messages: list[BaseMessage], run_manager: Any, kwargs: dict[str, Any]) -> _Plan:
        """Route the call (unless its batch already did), and settle what the experts are called with.

        The one place a call's routing options are read (:meth:`_RouteOptions.split`).
        """
        options, kwargs = _RouteOptions.split(kwargs)
        tools, kwargs = _split_tools(kwargs)
        query = self.route_query(messages)
        batched = _BATCH_DECISION.get()
        decision = batched[1] if batched is not None and batched[0] is self else self._route([query], options)[0]
        fallbacks = self.max_fallbacks if self.fallback else 0
        return _Plan(
            decision=decision,
            query=query,
            candidates=decision.candidates(fallbacks),
            tools=tools,
            children=child_callbacks(run_manager),
            kwargs=kwargs,
            exceptions_to_handle=self.exceptions_to_handle,
            fallback=fallbacks > 0,
        )

    async def _aplan(self, messages: list[BaseMessage], run_manager: Any, kwargs: dict[str, Any]) -> _Plan:
        """:meth:`_plan` in a worker thread: the encoder never runs on the event loop."""
        return await asyncio.to_thread(self._plan, messages, run_manager, kwargs)

    def route_query(self, messages: Sequence[BaseMessage]) -> Query:
        """The query the router reads for a call (see ``route_on``), in the core's own form."""
        return route_query(messages, self.route_on)

    def route_text(self, messages: Sequence[BaseMessage]) -> str:
        """The text the router's encoder reads for a call: :meth:`route_query` as the core renders it."""
        return query_text(self.route_query(messages))

    def decide(self, inputs: Sequence[LanguageModelInput], **options: Any) -> list[RouteDecision]:
        """Route many inputs in one router pass; returns one decision per input.

        Args:
            inputs: strings, message lists or prompt values.
            options: ``allowed_experts`` / ``force_expert`` / ``cost_weight`` / ``max_cost`` for these calls.
        """
        route_options, unknown = _RouteOptions.split(options)
        if unknown:
            raise TypeError(f"decide() got unknown routing options {sorted(unknown)}")
        return self._route(self._queries(inputs), route_options)

    def _queries(self, inputs: Sequence[LanguageModelInput]) -> list[Query]:
        return [self.route_query(self._convert_input(i).to_messages()) for i in inputs]

    def _route(self, queries: list[Query], options: _RouteOptions) -> list[RouteDecision]:
        """One router pass over ``queries``: the router's decision for each, or the caller's override."""
        wanted = options.allowed_experts if options.allowed_experts is not None else self.allowed_experts
        allowed = check_allowed(wanted, list(self.experts), what="allowed_experts")
        if allowed is None and len(self.experts) < len(self.router.experts):  # allow_subset
            allowed = list(self.experts)
        force = options.force_expert or self.force_expert
        if force is not None and force not in self.experts:
            raise ZooterError(f"force_expert {force!r} is not one of the experts {list(self.experts)}")
        decisions = self.router.route(
            queries,
            allowed=allowed,
            cost_weight=options.cost_weight if options.cost_weight is not None else self.cost_weight,
            max_cost=options.max_cost if options.max_cost is not None else self.max_cost,
            batch_size=self.batch_size,
            keep_vectors=self.feedback_log is not None and self.feedback_log.keep_vectors,
        )
        out = []
        for query, decision in zip(queries, decisions):
            if force is not None:
                decision = replace(decision, expert=force, reason="forced")
            elif self.default_expert is not None and not query_text(query).strip():
                decision = replace(decision, expert=self.default_expert, reason="empty query")
            else:  # the rule's choice, or (a share ``explore`` of the time) another it could make
                decision = self._explorer(decision)
            out.append(decision)
        return out

    # -- dispatch: the experts in order, one fallback rule ----------------------------------------
    def _dispatch(
        self, plan: _Plan, messages: list[BaseMessage], stop: list[str] | None, *, stream: bool = False
    ) -> Iterator[tuple[str, BaseMessage]]:
        """Announce the decision, then call the candidates in order until one answers.

        Yields ``(expert, message)`` once, or ``(expert, chunk)`` per chunk with ``stream``.
        """
        emit(plan.children, ROUTE_EVENT, plan.decision.to_dict())
        for name in plan.candidates:
            model, started = self._expert(name, plan.tools), False
            try:
                if stream:
                    for chunk in model.stream(messages, plan.config, stop=stop, **plan.kwargs):
                        started = True
                        yield name, chunk
                else:
                    yield name, model.invoke(messages, plan.config, stop=stop, **plan.kwargs)
                return
            except plan.exceptions_to_handle as error:
                surfacing = plan.failed(name, error, started=started)
                if surfacing is error:
                    raise
                if surfacing is not None:
                    raise surfacing from error

    async def _adispatch(
        self, plan: _Plan, messages: list[BaseMessage], stop: list[str] | None, *, stream: bool = False
    ) -> AsyncIterator[tuple[str, BaseMessage]]:
        """Async :meth:`_dispatch`."""
        await aemit(plan.children, ROUTE_EVENT, plan.decision.to_dict())
        for name in plan.candidates:
            model, started = self._expert(name, plan.tools), False
            try:
                if stream:
                    async for chunk in model.astream(messages, plan.config, stop=stop, **plan.kwargs):
                        started = True
                        yield name, chunk
                else:
                    yield name, await model.ainvoke(messages, plan.config, stop=stop, **plan.kwargs)
                return
            except plan.exceptions_to_handle as error:
                surfacing = plan.failed(name, error, started=started)
                if surfacing is error:
                    raise
                if surfacing is not None:
                    raise surfacing from error

    def _expert(self, name: str, tools: dict[str, Any] | None = None) -> Runnable:
        """The expert's chat model, with this call's tools bound."""
        model = self.experts[name]
        if tools:
            options = dict(tools)
            model = model.bind_tools(options.pop("tools"), **options)
        return model

    def _tagged(self, message: Any, plan: _Plan, name: str) -> BaseMessage:
        """The expert's answer (or first chunk) with the decision in its response metadata."""
        if not isinstance(message, BaseMessage):
            raise ZooterError(f"expert {name!r} returned {type(message).__name__}, not a chat message")
        record = plan.record(name)
        if self.feedback_log is not None:  # once per answer: its first chunk, or the whole message
            propensity = plan.decision.propensity if name == plan.decision.expert else None
            vector = plan.decision.vector
            self.feedback_log.log_decision(
                record["id"],
                plan.query,
                name,
                reason=record["reason"],
                propensity=propensity,
                vector=None if vector is None else QueryVector.of(vector, self.router.encoder_id),
            )
        metadata = {"model_name": model_name(self.experts[name], name), **message.response_metadata, "zooter": record}
        return message.model_copy(update={"response_metadata": metadata})

    def _chunk(self, chunk: Any, plan: _Plan, name: str, *, first: bool) -> ChatGenerationChunk:
        """A streamed chunk of the expert's answer; the first carries the decision."""
        if not isinstance(chunk, AIMessageChunk):
            chunk = AIMessageChunk(content=getattr(chunk, "content", chunk))
        return ChatGenerationChunk(message=self._tagged(chunk, plan, name) if first else chunk)

    # -- calls LangChain does not hand the hooks all they need -----------------------------------
    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        """``BaseChatModel.stream``, with its run pinned so the expert's run nests inside it."""
        with stream_run(config) as config:  # _stream gets no run manager from BaseChatModel.stream
            yield from super().stream(input, config, stop=stop, **kwargs)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        """``BaseChatModel.astream``, with its run pinned so the expert's run nests inside it."""
        with stream_run(config) as config:
            async for chunk in super().astream(input, config, stop=stop, **kwargs):
                yield chunk

    @contextmanager
    def _batched(self, decision: RouteDecision) -> Iterator[None]:
        """Within this block, this model's call uses ``decision`` instead of routing again."""
        token = _BATCH_DECISION.set((self, decision))
        try:
            yield
        finally:
            _BATCH_DECISION.reset(token)

    def _route_batch(self, inputs: list[LanguageModelInput], kwargs: Mapping[str, Any]) -> list[RouteDecision]:
        """A batch's decisions, one router pass for all its inputs (its routing options apply to each)."""
        return self._route(self._queries(inputs), _RouteOptions.split(kwargs)[0])

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        """Route every input in one router pass, then run each input's expert concurrently."""
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        decisions = self._route_batch(inputs, kwargs)

        def run(item: tuple[LanguageModelInput, RunnableConfig, RouteDecision]) -> AIMessage | Exception:
            input_, config_, decision = item
            try:
                with self._batched(decision):
                    return self.invoke(input_, config_, **kwargs)
            except Exception as e:
                if return_exceptions:
                    return e
                raise

        items = list(zip(inputs, configs, decisions))
        with get_executor_for_config(configs[0]) as executor:
            return cast("list[AIMessage]", list(executor.map(run, items)))

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        """Async :meth:`batch`: one router pass in a worker thread, then the experts concurrently."""
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        decisions = await run_in_executor(configs[0], self._route_batch, inputs, kwargs)

        async def run(input_: LanguageModelInput, config_: RunnableConfig, decision: RouteDecision) -> Any:
            try:
                with self._batched(decision):
                    return await self.ainvoke(input_, config_, **kwargs)
            except Exception as e:
                if return_exceptions:
                    return e
                raise

        coros = [run(i, c, d) for i, c, d in zip(inputs, configs, decisions)]
        return await gather_with_concurrency(configs[0].get("max_concurrency"), *coros)

    # -- tools and structured output -------------------------------------------------------------
    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools: the chosen expert is called with them bound (its own ``bind_tools``).

        The result is a ``RunnableBinding`` over this router, as for any chat model, so it works as
        the model of an agent's tool-calling loop. Tools travel in OpenAI format, which every
        LangChain chat model's ``bind_tools`` accepts.
        """
        for name, model in self.experts.items():  # fail now, not on the first call that picks it
            if type(model).bind_tools is BaseChatModel.bind_tools:
                raise ZooterError(f"expert {name!r} ({type(model).__name__}) does not support tool calling")
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        return self.bind(tools=formatted, tool_choice=tool_choice, tool_options=kwargs)

    def with_structured_output(
        self, schema: dict[str, Any] | type, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        """Route, then ask the chosen expert for ``schema`` (its own ``with_structured_output``)."""
        structured = {
            name: self._expert(name).with_structured_output(schema, include_raw=include_raw, **kwargs)
            for name in self.experts
        }

        def pick(input_: LanguageModelInput, config: RunnableConfig) -> Runnable:
            decision = self.decide([input_])[0]
            dispatch_custom_event(ROUTE_EVENT, decision.to_dict(), config=config)
            return structured[decision.expert]

        async def apick(input_: LanguageModelInput, config: RunnableConfig) -> Runnable:
            decision = (await asyncio.to_thread(self.decide, [input_]))[0]
            await adispatch_custom_event(ROUTE_EVENT, decision.to_dict(), config=config)
            return structured[decision.expert]

        return RunnableLambda(pick, afunc=apick, name="ZooterStructuredOutput")


ZooterRouterRunnable = ChatZooterRouter
"""The earlier name of :class:`ChatZooterRouter`, kept as an alias."""

__all__ = ["ROUTE_EVENT", "ChatZooterRouter", "ZooterRouterRunnable"]
