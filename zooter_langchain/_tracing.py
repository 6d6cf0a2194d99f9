"""What traces see: wrapped models' runs nested in the wrapper's run, custom events, model names.

LangChain's chat-model run managers have no ``get_child``, and ``BaseChatModel.stream`` calls
``_stream`` without its run manager; the helpers here fill both gaps for every adapter module.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
    adispatch_custom_event,
    dispatch_custom_event,
)
from langchain_core.language_models.base import LangSmithParams
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config

logger = logging.getLogger(__name__)

# (run id, config) of the stream call in progress: see stream_run
_STREAM_PARENT: ContextVar[tuple[uuid.UUID, RunnableConfig] | None] = ContextVar("zooter_stream_parent", default=None)


def child_callbacks(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
) -> CallbackManager | AsyncCallbackManager | None:
    """A callback manager whose runs nest under ``run_manager``'s run (or the stream in progress).

    Does what ``ParentRunManager.get_child`` does, so a wrapped model's run shows inside the
    wrapper's run in traces. Without a run manager, the run pinned by :func:`stream_run` is the
    parent; None when there is neither.
    """
    if run_manager is None:
        return _stream_children()
    cls = AsyncCallbackManager if isinstance(run_manager, AsyncCallbackManagerForLLMRun) else CallbackManager
    manager = cls(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return manager


@contextmanager
def stream_run(config: RunnableConfig | None) -> Iterator[RunnableConfig]:
    """Fix a stream call's run id in advance, so :func:`child_callbacks` can nest runs under it.

    ``BaseChatModel.stream`` gives ``_stream`` no run manager; inside this block, the config (with
    the run id the stream's run will get) is where ``child_callbacks(None)`` finds its parent.
    """
    config = ensure_config(config)
    config = {**config, "run_id": config.get("run_id") or uuid.uuid4()}
    previous = _STREAM_PARENT.get()
    _STREAM_PARENT.set((config["run_id"], config))
    try:
        yield config
    finally:  # set back, not reset: a stream may be closed from another context than it started in
        _STREAM_PARENT.set(previous)


def _stream_children() -> CallbackManager | None:
    parent = _STREAM_PARENT.get()
    if parent is None:
        return None
    run_id, config = parent
    manager = CallbackManager.configure(
        config.get("callbacks"), inheritable_tags=config.get("tags"), inheritable_metadata=config.get("metadata")
    )
    manager.parent_run_id = run_id
    return manager


def emit(children: CallbackManager | AsyncCallbackManager | None, name: str, data: Any) -> None:
    """Send a custom event from the run ``children`` nests under (a sync manager; no-op for None)."""
    if children is not None:
        children.on_custom_event(name, data, run_id=children.parent_run_id)


async def aemit(children: CallbackManager | AsyncCallbackManager | None, name: str, data: Any) -> None:
    """:func:`emit` for either kind of manager, awaiting an async one."""
    if children is None:
        return
    result = children.on_custom_event(name, data, run_id=children.parent_run_id)
    if asyncio.iscoroutine(result):  # an async manager; a sync one (stream path) has already run
        await result


def dispatch_event(name: str, data: Any) -> None:
    """Send a custom event from the current run; logged and skipped outside any run."""
    try:
        dispatch_custom_event(name, data)
    except RuntimeError:  # no parent run to attach the event to
        logger.debug("no run to attach the %s event to", name)


async def adispatch_event(name: str, data: Any) -> None:
    """Async :func:`dispatch_event`."""
    try:
        await adispatch_custom_event(name, data)
    except RuntimeError:
        logger.debug("no run to attach the %s event to", name)


def model_name(model: Any, fallback: str) -> str:
    """The name tracing should report for a chat model: its model attribute, tracing params, or ``fallback``."""
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    try:
        name = model._get_ls_params().get("ls_model_name")
    except Exception:  # a chat model whose tracing params need arguments or fail: the name will do
        name = None
    return name or fallback


def ls_params(name: str, stop: list[str] | None) -> LangSmithParams:
    """What LangSmith shows for one of zooter's chat models: provider zooter, model ``name``, ``stop``."""
    params = LangSmithParams(ls_provider="zooter", ls_model_type="chat", ls_model_name=name)
    if stop:
        params["ls_stop"] = stop
    return params
