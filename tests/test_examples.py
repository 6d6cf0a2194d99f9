"""The examples run offline, as a user would run them, and show what they promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_langchain_example_runs_offline() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "langchain_router.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for section in ("LCEL chain", "streaming", "batch", "astream_events", "agent with two tools"):
        assert section in out
    assert "zooter_route: expert=" in out
    assert "['calculator']" in out and "tool               42" in out


@pytest.mark.slow
def test_model_router_middleware_example_runs_offline() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "model_router_middleware.py")],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for expert in ("coder", "writer", "mathematician"):
        assert f"trace: small-example-router chose {expert}" in out  # a callback handler saw the decision
        assert f"state: model_route={expert}" in out  # the agent's state holds it
        assert f"reply: [{expert}]" in out  # and the chosen model answered
    assert "['coder', 'writer', 'mathematician']" in out
