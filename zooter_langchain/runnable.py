"""``ZooterRouterRunnable``: a chat model that answers each call with the expert a router picks.

Example:
    >>> from langchain_core.prompts import ChatPromptTemplate
    >>> from langchain_core.output_parsers import StrOutputParser
    >>> from zooter_langchain import ZooterRouterRunnable
    >>> model = ZooterRouterRunnable.from_pretrained(  # doctest: +SKIP
    ...     "my-router", experts={"gpt-4o": ChatOpenAI(model="gpt-4o"), "claude": ChatAnthropic(model=...)}
    ... )
    >>> chain = ChatPromptTemplate.from_template("{question}") | model | StrOutputParser()  # doctest: +SKIP
    >>> chain.invoke({"question": "Prove that sqrt(2) is irrational"})  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, cast

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.runnables.config import ensure_config, get_config_list, get_executor_for_config, run_in_executor
from langchain_core.runnables.utils import gather_with_concurrency
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

from zooter.errors import ExpertMismatchError, ZooterError, name_list

logger = logging.getLogger(__name__)

ROUTE_EVENT = "zooter_route"
# (run id, config) of the stream call in progress: see ZooterRouterRunnable._enter_stream
_STREAM_PARENT: ContextVar[tuple[uuid.UUID, RunnableConfig] | None] = ContextVar("zooter_stream_parent", default=None)
_DECISION_KWARG = "zooter_route"  # carries a precomputed decision from invoke/batch into _generate
_CALL_OPTIONS = ("allowed_experts", "force_expert")  # per-call kwargs that stay with the router


def _record_failure(attempts: list[dict[str, str]], name: str, error: Exception, next_expert: str) -> None:
    attempts.append({"expert": name, "error": f"{type(error).__name__}: {error}"})
    logger.warning("expert %s failed (%s); falling back to %s", name, error, next_expert)


async def _emit(children: Any, decision: dict[str, Any]) -> None:
    result = children.on_custom_event(ROUTE_EVENT, decision, run_id=children.parent_run_id)
    if asyncio.iscoroutine(result):  # an async manager; a sync one (stream path) has already run
        await result


def message_text(message: BaseMessage) -> str:
    """The text of a message; non-text content blocks (images, audio, tool calls) are skipped."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return " ".join(parts)


def last_human_text(messages: Sequence[BaseMessage]) -> str:
    """The text of the last human message (empty when there is none)."""
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message_text(message)
    return ""


def conversation_text(messages: Sequence[BaseMessage]) -> str:
    """The whole conversation as ``role: text`` lines (tool results and system prompts included)."""
    return "\n".join(f"{m.type}: {message_text(m)}" for m in messages if message_text(m))


def child_callbacks(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun,
) -> CallbackManager | AsyncCallbackManager:
    """A callback manager whose runs nest under ``run_manager``'s run.

    Chat-model run managers have no ``get_child``; this does what ``ParentRunManager.get_child``
    does, so a wrapped model's run shows inside the wrapper's run in traces.
    """
    cls = AsyncCallbackManager if isinstance(run_manager, AsyncCallbackManagerForLLMRun) else CallbackManager
    manager = cls(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return manager


def _model_name(model: Any, fallback: str) -> str:
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    try:
        name = model._get_ls_params().get("ls_model_name")
    except Exception:  # a chat model whose tracing params need arguments or fail: the name will do
        name = None
    return name or fallback


class ZooterRouterRunnable(BaseChatModel):
    """A chat model that routes each call to one of several expert chat models.

    A trained :class:`zooter.ZooterRouter` reads the query (by default the last human message) and
    picks the expert most likely to answer it best; only that expert runs. Every answer carries the
    decision in ``response_metadata["zooter"]`` (chosen expert, every expert's probability, any
    fallback attempts), and a ``zooter_route`` custom callback event carries the same.

    Args:
        experts: expert name -> chat model; names must match the router's experts.
        router: a trained :class:`zooter.ZooterRouter`.
        route_on: what to route on: ``"last_human"`` (default), ``"conversation"``, or a function
            from the message list to a text.
        default_expert: the expert for calls with no text to route on (e.g. images only); by
            default such calls are routed like an empty query.
        fallback: when the chosen expert raises, try the next most probable ones.
        max_fallbacks: how many other experts fallback may try.
        allowed_experts: choose only among these (per call: ``invoke(..., allowed_experts=[...])``).
        force_expert: always use this expert, still reporting the router's probabilities (per call:
            ``invoke(..., force_expert="name")``), e.g. for A/B checks.
        allow_subset: accept ``experts`` that cover only some of the router's experts; the others
            are never chosen.
        batch_size: queries per router forward in ``batch`` (default: the router's
            ``default_batch_size``, 8 on a CPU and 64 on a GPU).

    Example:
        >>> model = ZooterRouterRunnable(router=router, experts={"coder": coder, "writer": writer})  # doctest: +SKIP
        >>> reply = model.invoke("Fix this segfault in my C code")  # doctest: +SKIP
        >>> reply.response_metadata["zooter"]["expert"]  # doctest: +SKIP
        'coder'
    """

    experts: dict[str, Any]
    router: Any = Field(exclude=True)
    route_on: Literal["last_human", "conversation"] | Callable[[list[BaseMessage]], str] = "last_human"
    default_expert: str | None = None
    fallback: bool = False
    max_fallbacks: int = Field(default=2, ge=0)
    allowed_experts: list[str] | None = None
    force_expert: str | None = None
    allow_subset: bool = False
    batch_size: int | None = Field(default=None, ge=1)

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        # checked here rather than in a pydantic validator, which would wrap the error in a
        # ValidationError and hide the missing/extra lists from the caller
        self._check_experts()

    def _check_experts(self) -> None:
        router_experts = list(self.router.experts)
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

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | Path,
        *,
        experts: dict[str, Any],
        revision: str | None = None,
        token: str | None = None,
        device: str | None = None,
        **kwargs: Any,
    ) -> ZooterRouterRunnable:
        """Load a saved router (local folder or Hub repo id) and wrap ``experts`` with it."""
        from zooter.router import ZooterRouter

        router = ZooterRouter.from_pretrained(path_or_repo_id, revision=revision, token=token, device=device)
        return cls(router=router, experts=experts, **kwargs)

    # -- LangChain hooks ---------------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "zooter-router"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "experts": {name: _model_name(model, name) for name, model in self.experts.items()},
            "route_on": self.route_on if isinstance(self.route_on, str) else getattr(self.route_on, "__name__", "fn"),
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider="zooter", ls_model_type="chat", ls_model_name="zooter-router")
        decision = kwargs.get(_DECISION_KWARG)
        if isinstance(kwargs.get("model"), str):  # a per-call model override, passed on to the expert
            params["ls_model_name"] = kwargs["model"]
        elif decision is not None:  # known before the run starts when invoke/batch routed first
            params["ls_model_name"] = _model_name(self.experts[decision["expert"]], decision["expert"])
        if stop:
            params["ls_stop"] = stop
        return params

    # -- routing -------------------------------------------------------------------------------
    def route_text(self, messages: Sequence[BaseMessage]) -> str:
        """The text the router reads for a call."""
        if callable(self.route_on):
            return self.route_on(list(messages))
        if self.route_on == "conversation":
            return conversation_text(messages)
        return last_human_text(messages)

    def decide(self, inputs: Sequence[LanguageModelInput], **options: Any) -> list[dict[str, Any]]:
        """Route many inputs in one router pass; returns one decision dict per input.

        Args:
            inputs: strings, message lists or prompt values.
            options: ``allowed_experts`` / ``force_expert`` for these calls.
        """
        texts = [self.route_text(self._convert_input(i).to_messages()) for i in inputs]
        return self._decide_texts(texts, **options)

    def _decide_texts(
        self, texts: list[str], *, allowed_experts: Sequence[str] | None = None, force_expert: str | None = None
    ) -> list[dict[str, Any]]:
        if isinstance(allowed_experts, str):  # one name, not its letters
            allowed_experts = [allowed_experts]
        allowed = [e for e in (allowed_experts or self.allowed_experts or self.router.experts) if e in self.experts]
        if not allowed:
            raise ZooterError(
                f"no allowed expert has a chat model; allowed {allowed_experts}, have {list(self.experts)}"
            )
        force = force_expert or self.force_expert
        if force is not None and force not in self.experts:
            raise ZooterError(f"force_expert {force!r} is not one of the experts {list(self.experts)}")
        decisions = self.router.route(texts, allowed=allowed, batch_size=self.batch_size)
        out = []
        for text, decision in zip(texts, decisions):
            expert, reason = decision.expert, "router"
            if force is not None:
                expert, reason = force, "forced"
            elif not text.strip() and self.default_expert is not None:
                expert, reason = self.default_expert, "empty query"
            out.append(
                {"expert": expert, "reason": reason, "probabilities": decision.probabilities, "allowed": allowed}
            )
        return out

    def _split_options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {key: kwargs.pop(key) for key in _CALL_OPTIONS if key in kwargs}

    def _decision_for(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> dict[str, Any]:
        options = self._split_options(kwargs)
        decision = kwargs.pop(_DECISION_KWARG, None)
        return decision or self._decide_texts([self.route_text(messages)], **options)[0]

    async def _adecision_for(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> dict[str, Any]:
        """:meth:`_decision_for` with any routing done in a worker thread, off the event loop."""
        if _DECISION_KWARG in kwargs:
            return self._decision_for(messages, kwargs)
        options = self._split_options(kwargs)
        return (await asyncio.to_thread(self._decide_texts, [self.route_text(messages)], **options))[0]

    def _candidates(self, decision: dict[str, Any]) -> list[str]:
        """The chosen expert, then (with fallback) the next most probable allowed ones."""
        if not self.fallback:
            return [decision["expert"]]
        probs = decision["probabilities"]
        others = sorted((e for e in decision["allowed"] if e != decision["expert"]), key=lambda e: -probs.get(e, 0.0))
        return [decision["expert"], *others[: self.max_fallbacks]]

    @staticmethod
    def _pop_tools(kwargs: dict[str, Any]) -> dict[str, Any]:
        """The ``bind_tools`` arguments of this call, taken out of ``kwargs``."""
        tools = kwargs.pop("tools", None)
        tool_choice = kwargs.pop("tool_choice", None)
        options = dict(kwargs.pop("tool_options", None) or {})
        if not tools:
            return {}
        if tool_choice is not None:
            options["tool_choice"] = tool_choice
        return {"tools": tools, **options}

    def _expert(self, name: str, tools: dict[str, Any] | None = None) -> Runnable:
        """The expert's chat model, with this call's tools bound."""
        model = self.experts[name]
        if tools:
            options = dict(tools)
            model = model.bind_tools(options.pop("tools"), **options)
        return model

    @staticmethod
    def _metadata(decision: dict[str, Any], answered_by: str, attempts: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "expert": answered_by,
            "routed_to": decision["expert"],
            "reason": decision["reason"] if answered_by == decision["expert"] else "fallback",
            "probabilities": decision["probabilities"],
            "attempts": attempts,
        }

    # -- calls: route first, so tracing knows the expert and batches share one router pass ----
    def _route_first(self, input: LanguageModelInput, kwargs: dict[str, Any]) -> None:
        """Put the decision into ``kwargs`` unless a batch already did."""
        if _DECISION_KWARG not in kwargs:
            kwargs[_DECISION_KWARG] = self.decide([input], **self._split_options(kwargs))[0]

    async def _aroute_first(
        self, input: LanguageModelInput, config: RunnableConfig | None, kwargs: dict[str, Any]
    ) -> None:
        """:meth:`_route_first` with the encoder in a worker thread, never on the event loop."""
        if _DECISION_KWARG not in kwargs:
            options = self._split_options(kwargs)
            kwargs[_DECISION_KWARG] = (await run_in_executor(config, self.decide, [input], **options))[0]

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        self._route_first(input, kwargs)
        return super().invoke(input, config, stop=stop, **kwargs)

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        await self._aroute_first(input, config, kwargs)
        return await super().ainvoke(input, config, stop=stop, **kwargs)

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        self._route_first(input, kwargs)
        config, previous = self._enter_stream(config)
        try:
            yield from super().stream(input, config, stop=stop, **kwargs)
        finally:
            _STREAM_PARENT.set(previous)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        await self._aroute_first(input, config, kwargs)
        config, previous = self._enter_stream(config)
        try:
            async for chunk in super().astream(input, config, stop=stop, **kwargs):
                yield chunk
        finally:
            _STREAM_PARENT.set(previous)

    @staticmethod
    def _enter_stream(config: RunnableConfig | None) -> tuple[RunnableConfig, Any]:
        # BaseChatModel.stream calls _stream without its run manager; fix the run id in advance and
        # leave it (with the callbacks) where _stream can find it, so the expert's run nests inside.
        config = ensure_config(config)
        config = {**config, "run_id": config.get("run_id") or uuid.uuid4()}
        previous = _STREAM_PARENT.get()
        _STREAM_PARENT.set((config["run_id"], config))
        return config, previous

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
        decisions = self.decide(inputs, **self._split_options(kwargs))

        def run(item: tuple[LanguageModelInput, RunnableConfig, dict[str, Any]]) -> AIMessage | Exception:
            input_, config_, decision = item
            try:
                return self.invoke(input_, config_, **kwargs, **{_DECISION_KWARG: decision})
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
        options = self._split_options(kwargs)
        decisions = await run_in_executor(configs[0], self.decide, inputs, **options)

        async def run(input_: LanguageModelInput, config_: RunnableConfig, decision: dict[str, Any]) -> Any:
            try:
                return await self.ainvoke(input_, config_, **kwargs, **{_DECISION_KWARG: decision})
            except Exception as e:
                if return_exceptions:
                    return e
                raise

        coros = [run(i, c, d) for i, c, d in zip(inputs, configs, decisions)]
        return await gather_with_concurrency(configs[0].get("max_concurrency"), *coros)

    # -- the BaseChatModel hooks ---------------------------------------------------------------
    @staticmethod
    def _children(run_manager: Any) -> Any:
        """A callback manager whose runs nest under this router's run (or the stream in progress)."""
        if run_manager is None:
            parent = _STREAM_PARENT.get()
            if parent is None:
                return None
            run_id, config = parent
            manager = CallbackManager.configure(
                config.get("callbacks"),
                inheritable_tags=config.get("tags"),
                inheritable_metadata=config.get("metadata"),
            )
            manager.parent_run_id = run_id
            return manager
        return child_callbacks(run_manager)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        decision = self._decision_for(messages, kwargs)
        children = self._children(run_manager)
        if children is not None:
            children.on_custom_event(ROUTE_EVENT, decision, run_id=children.parent_run_id)
        tools = self._pop_tools(kwargs)
        attempts: list[dict[str, str]] = []
        candidates = self._candidates(decision)
        for i, name in enumerate(candidates):
            try:
                message = self._expert(name, tools).invoke(messages, {"callbacks": children}, stop=stop, **kwargs)
            except Exception as e:
                if i == len(candidates) - 1:
                    raise
                _record_failure(attempts, name, e, candidates[i + 1])
                continue
            return self._result(message, decision, name, attempts)
        raise AssertionError("unreachable")  # the last candidate either returns or raises

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        decision = await self._adecision_for(messages, kwargs)
        children = self._children(run_manager)
        if children is not None:
            await _emit(children, decision)
        tools = self._pop_tools(kwargs)
        attempts: list[dict[str, str]] = []
        candidates = self._candidates(decision)
        for i, name in enumerate(candidates):
            try:
                message = await self._expert(name, tools).ainvoke(
                    messages, {"callbacks": children}, stop=stop, **kwargs
                )
            except Exception as e:
                if i == len(candidates) - 1:
                    raise
                _record_failure(attempts, name, e, candidates[i + 1])
                continue
            return self._result(message, decision, name, attempts)
        raise AssertionError("unreachable")

    def _result(self, message: Any, decision: dict[str, Any], name: str, attempts: list[dict[str, str]]) -> ChatResult:
        if not isinstance(message, BaseMessage):
            raise ZooterError(f"expert {name!r} returned {type(message).__name__}, not a chat message")
        metadata = {
            "model_name": _model_name(self.experts[name], name),
            **message.response_metadata,
            "zooter": self._metadata(decision, name, attempts),
        }
        message = message.model_copy(update={"response_metadata": metadata})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        decision = self._decision_for(messages, kwargs)
        children = self._children(run_manager)
        if children is not None:
            children.on_custom_event(ROUTE_EVENT, decision, run_id=children.parent_run_id)
        tools = self._pop_tools(kwargs)
        attempts: list[dict[str, str]] = []
        candidates = self._candidates(decision)
        for i, name in enumerate(candidates):
            started = False
            try:
                for chunk in self._expert(name, tools).stream(messages, {"callbacks": children}, stop=stop, **kwargs):
                    if not started:
                        chunk = self._tag_first_chunk(chunk, decision, name, attempts)
                        started = True
                    yield ChatGenerationChunk(message=chunk)
                return
            except Exception as e:
                if started or i == len(candidates) - 1:  # tokens already sent cannot be taken back
                    raise
                _record_failure(attempts, name, e, candidates[i + 1])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        decision = await self._adecision_for(messages, kwargs)
        children = self._children(run_manager)
        if children is not None:
            await _emit(children, decision)
        tools = self._pop_tools(kwargs)
        attempts: list[dict[str, str]] = []
        candidates = self._candidates(decision)
        for i, name in enumerate(candidates):
            started = False
            try:
                async for chunk in self._expert(name, tools).astream(
                    messages, {"callbacks": children}, stop=stop, **kwargs
                ):
                    if not started:
                        chunk = self._tag_first_chunk(chunk, decision, name, attempts)
                        started = True
                    yield ChatGenerationChunk(message=chunk)
                return
            except Exception as e:
                if started or i == len(candidates) - 1:
                    raise
                _record_failure(attempts, name, e, candidates[i + 1])

    def _tag_first_chunk(
        self, chunk: Any, decision: dict[str, Any], name: str, attempts: list[dict[str, str]]
    ) -> AIMessageChunk:
        if not isinstance(chunk, AIMessageChunk):
            chunk = AIMessageChunk(content=getattr(chunk, "content", chunk))
        metadata = {
            "model_name": _model_name(self.experts[name], name),
            **chunk.response_metadata,
            "zooter": self._metadata(decision, name, attempts),
        }
        return chunk.model_copy(update={"response_metadata": metadata})

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
            from langchain_core.callbacks import dispatch_custom_event

            decision = self.decide([input_])[0]
            dispatch_custom_event(ROUTE_EVENT, decision, config=config)
            return structured[decision["expert"]]

        async def apick(input_: LanguageModelInput, config: RunnableConfig) -> Runnable:
            from langchain_core.callbacks import adispatch_custom_event

            decision = (await asyncio.to_thread(self.decide, [input_]))[0]
            await adispatch_custom_event(ROUTE_EVENT, decision, config=config)
            return structured[decision["expert"]]

        return RunnableLambda(pick, afunc=apick, name="ZooterStructuredOutput")
