"""The HTTP face of the simulator: the provider's ``/v1`` routes and the ``/_sim`` admin routes.

A chat request passes the gateway's checks in the provider's order: auth, body validation,
unknown model, balance, rate limits; then fault injection, latency, and a 200 that is billed.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

import orjson
from aiohttp import web

from kimi_dagster.simulator.batches import BATCHES, BatchService, add_batch_routes
from kimi_dagster.simulator.errors import ApiError, invalid, json_response, not_found
from kimi_dagster.simulator.faults import error_for, gateway_page
from kimi_dagster.simulator.files import FILES, FileStore, add_file_routes
from kimi_dagster.simulator.gateway import Rejection
from kimi_dagster.simulator.models import MODELS
from kimi_dagster.simulator.state import SimulatorState
from kimi_dagster.simulator.tokens import count_tokens
from kimi_dagster.simulator.validation import ChatRequest, check_messages, parse_chat

STATE = web.AppKey("state", SimulatorState)
MAX_BODY = 110 * 1024 * 1024  # room for a 100 MB batch file upload


def _reset_connection(request: web.Request) -> None:
    """Drop the connection with a TCP RST, as a crashed upstream or a load balancer would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _faulty_answer(
    request: web.Request, chat: ChatRequest, kind: str, record: dict[str, Any]
) -> web.StreamResponse:
    state = request.app[STATE]
    if kind == "reset":
        state.finish(record, None, "reset")
        _reset_connection(request)
        return web.Response()  # never sent: the connection is gone
    if kind == "hang":
        await asyncio.sleep(state.config.hang_seconds)
        state.finish(record, None, "hang")
        _reset_connection(request)
        return web.Response()
    if kind == "malformed":
        reply = state.reply(chat)
        await asyncio.sleep(state.latency(reply.completion_tokens))
        body = orjson.dumps(
            {
                "id": "chatcmpl-malformed",
                "object": "chat.completion",
                "model": chat.model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": reply.content}}
                ],
            }
        )
        state.finish(record, 200, "malformed")
        return web.Response(body=body[: len(body) // 2], content_type="application/json")
    if kind == "5xx":
        page = gateway_page(state.rng)
        if page is not None:
            status, content_type, text = page
            state.finish(record, status, f"http_{status}")
            return web.Response(status=status, text=text, content_type=content_type)
        kind = "server_error"
    if kind == "rate_limit":  # worded as the gateway's own, naming the account's real RPM
        raise Rejection("RPM", state.gateway.limits.rpm, 1.0).error()
    raise error_for(kind)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    record = state.log_request(request.headers.get("X-Request-Id"))
    admitted = False
    try:
        state.check_auth(request.headers.get("Authorization"))
        chat = parse_chat(await request.read())
        record["model"] = chat.model
        state.admit(chat, record)
        admitted = True
        kind = state.fault(chat)
        if kind is not None:
            return await _faulty_answer(request, chat, kind, record)
        reply = state.reply(chat)
        await asyncio.sleep(state.latency(reply.completion_tokens))
        body = state.serve(chat, reply, request_id=record["request_id"], batch=False)
        state.finish(record, 200)
        return json_response(body, headers=_rate_headers(state))
    except ApiError as error:
        state.finish(record, error.status, error.type)
        return error.response(_rate_headers(state))
    except asyncio.CancelledError:
        state.finish(record, None, "client_disconnected")
        raise
    finally:
        if admitted:
            state.gateway.release()


def _rate_headers(state: SimulatorState) -> dict[str, str] | None:
    return state.gateway.headers(time.monotonic()) if state.config.ratelimit_headers else None


@web.middleware
async def _api_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Render :class:`ApiError` from the non-chat routes; authenticate ``/v1``."""
    try:
        if request.path.startswith("/v1/") and request.path != "/v1/chat/completions":
            request.app[STATE].check_auth(request.headers.get("Authorization"))
        return await handler(request)
    except ApiError as error:
        return error.response()


async def list_models(request: web.Request) -> web.Response:
    data = [
        {
            "id": spec.name,
            "object": "model",
            "owned_by": "moonshot",
            "context_length": spec.context_tokens,
        }
        for spec in MODELS.values()
    ]
    return json_response({"object": "list", "data": data})


async def balance(request: web.Request) -> web.Response:
    return json_response({"data": request.app[STATE].ledger.balance()})


async def estimate_tokens(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise invalid("the body is not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise invalid("model is required")
    check_messages(body.get("messages"))
    if body["model"] not in MODELS:
        raise not_found(body["model"])
    return json_response({"data": {"total_tokens": count_tokens(body["messages"])}})


async def admin_bill(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].ledger.lines)


async def admin_requests(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].requests)


async def admin_stats(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].stats())


async def admin_config(request: web.Request) -> web.Response:
    try:
        changes = orjson.loads(await request.read())
        if not isinstance(changes, dict):
            raise ValueError("send a JSON object of config fields")
        config = request.app[STATE].configure(changes)
    except (ValueError, TypeError) as error:
        return json_response({"error": str(error)}, status=400)
    return json_response(config.to_dict())


async def admin_reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    request.app[FILES].clear()
    request.app[BATCHES].clear()
    return json_response({"reset": True})


def build_app(state: SimulatorState) -> web.Application:
    app = web.Application(middlewares=[_api_errors], client_max_size=MAX_BODY)
    app[STATE] = state
    files = FileStore()
    add_file_routes(app, files)
    add_batch_routes(app, BatchService(state, files))
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/users/me/balance", balance)
    app.router.add_post("/v1/tokenizers/estimate-token-count", estimate_tokens)
    app.router.add_get("/_sim/bill", admin_bill)
    app.router.add_get("/_sim/requests", admin_requests)
    app.router.add_get("/_sim/stats", admin_stats)
    app.router.add_post("/_sim/config", admin_config)
    app.router.add_post("/_sim/reset", admin_reset)
    return app
