"""JSON answers, and the provider's errors: ``{"error": {"type": ..., "message": ...}}``."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from orjson import dumps

ORG = "org-sim"
HIGH_RISK = "The request was rejected because it was considered high risk"
NO_BALANCE = (
    f"Your account {ORG} is suspended due to insufficient balance, "
    "please recharge your account or check your plan and billing details"
)
OVERLOADED = "The engine is currently overloaded, please try again later"


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=dumps(data), content_type="application/json", headers=headers
    )


class ApiError(Exception):
    """An error answer; raised anywhere in request handling, rendered once by the route."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"type": self.type, "message": self.message}}

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        return json_response(self.body(), self.status, headers)


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", f"Invalid request: {message}")


def not_found(model: str) -> ApiError:
    return ApiError(
        404, "resource_not_found_error", f"Not found the model {model} or Permission denied"
    )
