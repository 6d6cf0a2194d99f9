"""Chat models from ``provider:model`` strings, through ``langchain.chat_models.init_chat_model``.

The optional ``langchain`` package (``pip install "zooter-langchain[agents]"``) knows every
provider LangChain has a partner package for; the provider's own package (``langchain-openai``,
``langchain-anthropic``...) must be installed too.

Example:
    >>> from zooter_langchain.models import chat_model_from_spec
    >>> gpt = chat_model_from_spec("openai:gpt-4o-mini", temperature=0.7)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from zooter.errors import ConfigError, MissingDependencyError


def chat_model_from_spec(spec: str, **kwargs: Any) -> Any:
    """The chat model a ``provider:model`` string names (``model`` alone works where LangChain can
    infer the provider, e.g. ``gpt-4o``); ``kwargs`` go to the model (``temperature=0.7``...).

    Raises:
        MissingDependencyError: ``langchain`` or the provider's package is not installed.
        ConfigError: the spec is empty or names a provider LangChain does not know.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"expected a chat model as 'provider:model' (e.g. 'openai:gpt-4o-mini'), got {spec!r}")
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as e:
        raise MissingDependencyError(
            f"creating chat models from 'provider:model' strings needs the langchain package: "
            f'pip install "zooter-langchain[agents]" ({e})'
        ) from e
    try:
        return init_chat_model(model=spec.strip(), **kwargs)
    except ImportError as e:  # the provider's partner package is missing; LangChain's message names it
        raise MissingDependencyError(f"cannot create {spec!r}: {e}") from e
    except ValueError as e:  # unknown or uninferable provider
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot create chat model {spec!r}: {first}") from e


def parse_expert_specs(values: Iterable[str]) -> dict[str, str]:
    """``["NAME=provider:model", ...]`` -> ``{NAME: "provider:model"}``, in the order given.

    Raises:
        ConfigError: a value lacks ``=``, has an empty name or model, or repeats a name.
    """
    specs: dict[str, str] = {}
    for value in values:
        name, sep, model = value.partition("=")
        name, model = name.strip(), model.strip()
        if not sep or not name or not model:
            raise ConfigError(f"--expert expects NAME=PROVIDER:MODEL (e.g. coder=openai:gpt-4o-mini), got {value!r}")
        if name in specs:
            raise ConfigError(f"--expert {name!r} is given twice ({specs[name]!r} and {model!r})")
        specs[name] = model
    if not specs:
        raise ConfigError("give at least one --expert NAME=PROVIDER:MODEL")
    return specs


__all__ = ["chat_model_from_spec", "parse_expert_specs"]
