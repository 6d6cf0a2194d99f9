"""Deterministic, offline expert chat models for tests, examples and benchmarks.

``FakeExpertChatModel`` answers ``"[name] <the last human text>"``, streams it word by word,
supports ``bind_tools`` (it calls the first bound tool whose name appears in the question, once,
then answers with the tool's result) and ``with_structured_output`` through tool calling. It can be
told to fail, always or on some calls, to exercise fallbacks and retries. ``ReplayChatModel``
returns answers recorded earlier, to run the pipeline and benchmarks on real text offline.

Example:
    >>> from zooter_langchain.fake import FakeExpertChatModel
    >>> FakeExpertChatModel(name="coder").invoke("hello").content
    '[coder] hello'
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field


class AnsweringChatModel(BaseChatModel):
    """A chat model whose whole answer to a call is one message: subclass it and write ``_answer``.

    The base of the offline models here, and of a test's scripted model (a grader, a tagger):
    ``_answer(messages, **kwargs)`` returns the :class:`AIMessage`; LangChain's ``BaseChatModel``
    does the rest (callbacks, async in a worker thread, batching).

    Example:
        >>> class Shouting(AnsweringChatModel):
        ...     @property
        ...     def _llm_type(self) -> str:
        ...         return "shouting"
        ...
        ...     def _answer(self, messages, **kwargs):
        ...         return AIMessage(content=messages[-1].text.upper())
        >>> Shouting().invoke("hello").content
        'HELLO'
    """

    def _answer(self, messages: list[BaseMessage], **kwargs: Any) -> AIMessage:
        raise NotImplementedError

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._answer(messages, **kwargs))])


class FakeExpertChatModel(AnsweringChatModel):
    """An offline chat model with a name, streaming, tool calling and optional failures.

    Args:
        name: the expert's name, echoed in every answer.
        model_name: what tracing reports as the model.
        fail_every: raise on every n-th call (1: always; 0: never).
        latency: seconds to sleep per call (0 for overhead measurements).
    """

    name: str = "fake"
    model_name: str = "fake-expert"
    fail_every: int = 0
    latency: float = 0.0
    calls: int = Field(default=0, exclude=True)

    @property
    def _llm_type(self) -> str:
        return "fake-expert"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"name": self.name, "model_name": self.model_name}

    def _answer(self, messages: list[BaseMessage], **kwargs: Any) -> AIMessage:
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            raise RuntimeError(f"{self.name} is unavailable (call {self.calls})")
        if self.latency:
            time.sleep(self.latency)
        question = next((m for m in reversed(messages) if isinstance(m, HumanMessage)), None)
        text = question.text if question is not None else ""
        usage = UsageMetadata(input_tokens=len(text.split()), output_tokens=len(text.split()) + 1, total_tokens=0)
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        tools = kwargs.get("tools") or []
        last = messages[-1] if messages else None
        if isinstance(last, ToolMessage):
            return AIMessage(content=f"[{self.name}] {last.content}", usage_metadata=usage)
        for tool in tools:
            name = tool["function"]["name"]
            forced = kwargs.get("tool_choice") in (name, "any", "required") or (
                len(tools) == 1 and kwargs.get("tool_choice")
            )
            if forced or re.search(rf"\b{re.escape(name)}\b", text, re.IGNORECASE):
                args = _arguments(tool["function"].get("parameters", {}), text)
                call = {"name": name, "args": args, "id": f"call_{self.calls}", "type": "tool_call"}
                return AIMessage(content="", tool_calls=[call], usage_metadata=usage)
        return AIMessage(content=f"[{self.name}] {text}", usage_metadata=usage)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        message = self._answer(messages, **kwargs)
        if message.tool_calls:
            chunk = AIMessageChunk(
                content="",
                tool_call_chunks=[
                    {"name": c["name"], "args": _json(c["args"]), "id": c["id"], "index": i, "type": "tool_call_chunk"}
                    for i, c in enumerate(message.tool_calls)
                ],
                usage_metadata=message.usage_metadata,
            )
            yield ChatGenerationChunk(message=chunk)
            return
        words = str(message.content).split(" ")
        for i, word in enumerate(words):
            usage = message.usage_metadata if i == len(words) - 1 else None
            chunk = AIMessageChunk(content=word if i == 0 else " " + word, usage_metadata=usage)
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.content, chunk=ChatGenerationChunk(message=chunk))
            yield ChatGenerationChunk(message=chunk)

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)


class ReplayChatModel(AnsweringChatModel):
    """Answers known prompts with answers recorded earlier (e.g. a real model's, from a responses file).

    For offline evaluations and benchmarks on real text: each call returns the recorded answer to
    its last human message, with no waiting (model latency separately if you need it). A prompt
    with no recorded answer raises ``KeyError`` naming it.

    Args:
        name: the model whose answers these are (reported as ``model_name``).
        answers: prompt text -> recorded answer.

    Example:
        >>> ReplayChatModel(name="m", answers={"2 + 2?": "4"}).invoke("2 + 2?").content
        '4'
    """

    name: str
    answers: dict[str, str]

    @property
    def _llm_type(self) -> str:
        return "replay"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"name": self.name}

    def _answer(self, messages: list[BaseMessage], **kwargs: Any) -> AIMessage:
        question = next((m for m in reversed(messages) if isinstance(m, HumanMessage)), None)
        prompt = question.text if question is not None else ""
        if prompt not in self.answers:
            raise KeyError(f"{self.name} has no recorded answer to {prompt[:60]!r}")
        return AIMessage(content=self.answers[prompt], response_metadata={"model_name": self.name})


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def _arguments(parameters: dict[str, Any], text: str) -> dict[str, Any]:
    """Plausible arguments for a tool: numbers from the text for numeric fields, else the text."""
    numbers = [float(n) if "." in n else int(n) for n in re.findall(r"-?\d+(?:\.\d+)?", text)]
    args: dict[str, Any] = {}
    for i, (field, spec) in enumerate(parameters.get("properties", {}).items()):
        kind = spec.get("type")
        if kind in ("integer", "number"):
            args[field] = numbers[i] if i < len(numbers) else 0
        elif kind == "boolean":
            args[field] = False
        else:
            args[field] = text
    return args


__all__ = ["AnsweringChatModel", "FakeExpertChatModel", "ReplayChatModel"]
