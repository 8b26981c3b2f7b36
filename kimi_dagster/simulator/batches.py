"""The Batch API: batches of chat requests answered within a window, at 60 % of the price.

A batch goes validating -> in_progress -> finalizing -> completed on the configured
``batch_delays``; or failed (a model the Batch API does not serve, or a deleted input file),
expired (while ``expire_batches`` is set: halfway through, keeping the finished lines), or
cancelling -> cancelled. Lines are answered as the chat endpoint would, without its rate limits,
billed with ``"batch": true`` and the custom_id as request_id. A line fails into the error file
on invalid parameters (400), a ``[[sim:content_filter]]`` marker (400), a ``[[sim:fail=...]]``
marker or a draw under ``batch_line_failure`` (500 server_error). Output and error files list
their lines in shuffled order; each error line's ``error`` repeats its body's error object.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from kimi_dagster.simulator.errors import NO_BALANCE, ApiError, invalid, json_response
from kimi_dagster.simulator.faults import error_for
from kimi_dagster.simulator.files import CHAT_URL, FileStore, parse_batch_lines
from kimi_dagster.simulator.models import MODELS
from kimi_dagster.simulator.state import SimulatorState
from kimi_dagster.simulator.validation import check_chat

WINDOW = re.compile(r"(\d+)([hd])")
WINDOW_HOURS = (12, 7 * 24)
STEPS = 20  # in_progress advances in this many equal steps
YIELD_EVERY = 200  # lines answered between yields to the event loop
CANCELLABLE = ("validating", "in_progress")
STAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


@dataclass
class Batch:
    id: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int
    expires_at: int
    status: str = "validating"
    stamps: dict[str, int | None] = field(default_factory=lambda: dict.fromkeys(STAMPS))
    total: int = 0
    outputs: list[bytes] = field(default_factory=list)
    failures: list[bytes] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: dict[str, Any] | None = None

    def enter(self, status: str) -> None:
        self.status = status
        self.stamps[f"{status}_at"] = int(time.time())

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": CHAT_URL,
            "errors": self.errors,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            **self.stamps,
            "request_counts": {
                "total": self.total,
                "completed": len(self.outputs),
                "failed": len(self.failures),
            },
            "metadata": self.metadata,
        }


def _window_seconds(window: Any) -> int:
    match = WINDOW.fullmatch(window) if isinstance(window, str) else None
    hours = 0 if match is None else int(match[1]) * (24 if match[2] == "d" else 1)
    if not WINDOW_HOURS[0] <= hours <= WINDOW_HOURS[1]:
        raise invalid('completion_window must be from "12h" to "7d", e.g. "24h"')
    return hours * 3600


def _batch_not_found(batch_id: str) -> ApiError:
    return ApiError(404, "resource_not_found_error", f"Batch not found: {batch_id}")


class BatchService:
    """The account's batches and the tasks that move them through their lifecycle."""

    def __init__(self, state: SimulatorState, files: FileStore) -> None:
        self.state = state
        self.files = files
        self.batches: dict[str, Batch] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def clear(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self.batches.clear()

    def get(self, batch_id: str) -> Batch:
        try:
            return self.batches[batch_id]
        except KeyError:
            raise _batch_not_found(batch_id) from None

    def create(self, body: Any) -> Batch:
        if not isinstance(body, dict):
            raise invalid("the body must be a JSON object")
        if self.state.ledger.exhausted():
            raise ApiError(429, "exceeded_current_quota_error", NO_BALANCE)
        source = self.files.get(str(body.get("input_file_id")))
        if source.purpose != "batch":
            raise invalid(f"file {source.id} is not a batch input file")
        if body.get("endpoint") != CHAT_URL:
            raise invalid(f'endpoint must be "{CHAT_URL}"')
        window = _window_seconds(body.get("completion_window"))
        metadata = body.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
        ):
            raise invalid("metadata must be an object of strings")
        now = int(time.time())
        batch = Batch(
            f"batch_{uuid.uuid4().hex[:24]}",
            source.id,
            body["completion_window"],
            metadata,
            now,
            now + window,
        )
        self.batches[batch.id] = batch
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return batch

    def cancel(self, batch_id: str) -> Batch:
        batch = self.get(batch_id)
        if batch.status not in CANCELLABLE:
            raise invalid(f"a batch in status {batch.status} cannot be cancelled")
        batch.enter("cancelling")
        return batch

    def listing(self, after: str | None, limit: int) -> dict[str, Any]:
        """Newest first, ``limit`` batches after the one named ``after``."""
        ids = list(reversed(self.batches))
        start = 0
        if after:
            if after not in self.batches:
                raise _batch_not_found(after)
            start = ids.index(after) + 1
        page = [self.batches[i].to_dict() for i in ids[start : start + limit]]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": start + limit < len(ids),
        }

    async def _run(self, batch: Batch) -> None:
        await asyncio.sleep(self.state.config.batch_delays[0])
        if batch.status == "cancelling":
            return await self._close(batch, "cancelled")
        lines = self._validated_lines(batch)
        if lines is None:
            return
        batch.total = len(lines)
        batch.enter("in_progress")
        for step in range(STEPS):
            await asyncio.sleep(self.state.config.batch_delays[1] / STEPS)
            if batch.status == "cancelling":
                return await self._close(batch, "cancelled")
            if self.state.config.expire_batches and step >= STEPS // 2:
                return await self._close(batch, "expired")
            chunk = lines[step * len(lines) // STEPS : (step + 1) * len(lines) // STEPS]
            for index, line in enumerate(chunk, start=1):
                self._answer(batch, line)
                if index % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        batch.enter("finalizing")
        await self._close(batch, "completed")

    def _validated_lines(self, batch: Batch) -> list[dict[str, Any]] | None:
        """The input lines, or None after failing the batch for a file-level problem."""
        stored = self.files.files.get(batch.input_file_id)
        if stored is None:
            problem = ("file_not_found", f"input file {batch.input_file_id} was deleted")
            lines: list[dict[str, Any]] = []
        else:
            lines = parse_batch_lines(stored.content)
            model = lines[0]["body"]["model"]
            spec = MODELS.get(model)
            problem = ("model_not_supported", f"the Batch API does not serve model {model}")
            if spec is not None and spec.batch:
                return lines
        batch.errors = {
            "object": "list",
            "data": [{"code": problem[0], "message": problem[1], "line": None, "param": None}],
        }
        batch.enter("failed")
        return None

    def _answer(self, batch: Batch, line: dict[str, Any]) -> None:
        state = self.state
        request_id = uuid.uuid4().hex
        result: dict[str, Any] = {
            "id": f"batch_req_{request_id[:24]}",
            "custom_id": line["custom_id"],
        }
        try:
            request = check_chat(line["body"])
            kind = state.faults.marked(request)
            if kind is None and state.rng.random() < state.config.batch_line_failure:
                kind = "server_error"
            if kind is not None:
                raise error_for("content_filter" if kind == "content_filter" else "server_error")
            body = state.serve(
                request, state.reply(request), request_id=line["custom_id"], batch=True
            )
        except ApiError as error:
            status = 400 if error.status < 500 else 500
            result["response"] = {
                "status_code": status,
                "request_id": request_id,
                "body": error.body(),
            }
            result["error"] = error.body()["error"]
            batch.failures.append(orjson.dumps(result))
            return
        result["response"] = {"status_code": 200, "request_id": request_id, "body": body}
        result["error"] = None
        batch.outputs.append(orjson.dumps(result))

    async def _close(self, batch: Batch, status: str) -> None:
        """Write the output and error files of what was answered, after the finalizing delay."""
        await asyncio.sleep(self.state.config.batch_delays[2])
        name = batch.id
        for lines, suffix in ((batch.outputs, "output"), (batch.failures, "error")):
            if lines:
                shuffled = lines[:]
                self.state.rng.shuffle(shuffled)
                stored = self.files.add(
                    f"{name}_{suffix}.jsonl", "batch_output", b"\n".join(shuffled) + b"\n"
                )
                setattr(batch, f"{suffix}_file_id", stored.id)
        batch.enter("cancelled" if batch.status == "cancelling" else status)


BATCHES = web.AppKey("batches", BatchService)


async def create_batch(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise invalid("the body is not valid JSON") from None
    return json_response(request.app[BATCHES].create(body).to_dict())


async def list_batches(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        raise invalid("limit must be an integer") from None
    if not 1 <= limit <= 100:
        raise invalid("limit must be from 1 to 100")
    return json_response(request.app[BATCHES].listing(request.query.get("after"), limit))


async def get_batch(request: web.Request) -> web.Response:
    return json_response(request.app[BATCHES].get(request.match_info["batch_id"]).to_dict())


async def cancel_batch(request: web.Request) -> web.Response:
    return json_response(request.app[BATCHES].cancel(request.match_info["batch_id"]).to_dict())


def add_batch_routes(app: web.Application, service: BatchService) -> None:
    app[BATCHES] = service
    app.router.add_post("/v1/batches", create_batch)
    app.router.add_get("/v1/batches", list_batches)
    app.router.add_get("/v1/batches/{batch_id}", get_batch)
    app.router.add_post("/v1/batches/{batch_id}/cancel", cancel_batch)
