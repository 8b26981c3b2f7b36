"""Helpers shared by the simulator tests."""

from __future__ import annotations

from typing import Any

KEY = "sk-test"


def chat(model: str = "kimi-k2.6", text: str = "Hello there", **params: Any) -> dict[str, Any]:
    """A chat request body with one user message."""
    return {"model": model, "messages": [{"role": "user", "content": text}], **params}


def error_of(response: Any) -> tuple[int, str, str]:
    """(status, error type, message) of an error answer."""
    error = response.json()["error"]
    return response.status_code, error["type"], error["message"]
