"""The Files API, as far as the Batch API needs it: upload, look up, download, delete.

Uploads are checked as the provider documents: ``purpose=batch``, a ``.jsonl`` name, at most
100 MB, at most 1,000 batch files per organization, and lines of ``{"custom_id", "method":
"POST", "url": "/v1/chat/completions", "body"}`` with unique custom_ids and one model.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from kimi_dagster.simulator.errors import ApiError, invalid, json_response

MAX_FILE_BYTES = 100 * 1024 * 1024
MAX_BATCH_FILES = 1000
CHAT_URL = "/v1/chat/completions"


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str  # "batch" for uploads, "batch_output" for results
    content: bytes
    created_at: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "ok",
            "status_details": "",
        }


def file_not_found(file_id: str) -> ApiError:
    return ApiError(404, "resource_not_found_error", f"File not found: {file_id}")


def parse_batch_lines(content: bytes) -> list[dict[str, Any]]:
    """The lines of a batch input file; raises 400 naming the first bad line."""
    lines: list[dict[str, Any]] = []
    custom_ids: set[str] = set()
    models: set[str] = set()
    for number, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise invalid(f"line {number} is not valid JSON") from None
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            raise invalid(f"line {number} needs a string custom_id")
        if line["custom_id"] in custom_ids:
            raise invalid(f"line {number}: duplicate custom_id {line['custom_id']!r}")
        if line.get("method") != "POST" or line.get("url") != CHAT_URL:
            raise invalid(f'line {number} must have "method": "POST" and "url": "{CHAT_URL}"')
        body = line.get("body")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            raise invalid(f"line {number} needs a body with a model")
        custom_ids.add(line["custom_id"])
        models.add(body["model"])
        if len(models) > 1:
            raise invalid(f"line {number}: a batch file must use one model, found {sorted(models)}")
        lines.append(line)
    if not lines:
        raise invalid("the file has no requests")
    return lines


class FileStore:
    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}

    def clear(self) -> None:
        self.files.clear()

    def add(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        stored = StoredFile(
            f"file-{uuid.uuid4().hex[:24]}", filename, purpose, content, int(time.time())
        )
        self.files[stored.id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile:
        try:
            return self.files[file_id]
        except KeyError:
            raise file_not_found(file_id) from None

    async def upload(self, request: web.Request) -> StoredFile:
        """Read and check a multipart upload of a batch input file."""
        reader = await request.multipart()
        purpose = filename = None
        content = b""
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "purpose":
                purpose = await part.text()
            elif part.name == "file":
                filename = part.filename or "upload"
                content = await _read_capped(part)
        if purpose != "batch":
            raise invalid('purpose must be "batch"')
        if filename is None:
            raise invalid("a file part is required")
        if not filename.endswith(".jsonl"):
            raise invalid("batch files must be .jsonl")
        if sum(f.purpose == "batch" for f in self.files.values()) >= MAX_BATCH_FILES:
            raise invalid(f"at most {MAX_BATCH_FILES} batch files per organization")
        parse_batch_lines(content)
        return self.add(filename, purpose, content)


async def _read_capped(part: BodyPartReader) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(1 << 20):
        size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise invalid(f"files are limited to {MAX_FILE_BYTES // (1024 * 1024)} MB")
        chunks.append(chunk)
    return b"".join(chunks)


FILES = web.AppKey("files", FileStore)


async def upload_file(request: web.Request) -> web.Response:
    stored = await request.app[FILES].upload(request)
    return json_response(stored.to_dict())


async def list_files(request: web.Request) -> web.Response:
    data = [f.to_dict() for f in request.app[FILES].files.values()]
    return json_response({"object": "list", "data": data})


async def get_file(request: web.Request) -> web.Response:
    stored = request.app[FILES].get(request.match_info["file_id"])
    return json_response(stored.to_dict())


async def file_content(request: web.Request) -> web.Response:
    stored = request.app[FILES].get(request.match_info["file_id"])
    return web.Response(body=stored.content, content_type="application/jsonl")


async def delete_file(request: web.Request) -> web.Response:
    store = request.app[FILES]
    stored = store.get(request.match_info["file_id"])
    del store.files[stored.id]
    return json_response({"id": stored.id, "object": "file", "deleted": True})


def add_file_routes(app: web.Application, store: FileStore) -> None:
    app[FILES] = store
    app.router.add_post("/v1/files", upload_file)
    app.router.add_get("/v1/files", list_files)
    app.router.add_get("/v1/files/{file_id}", get_file)
    app.router.add_get("/v1/files/{file_id}/content", file_content)
    app.router.add_delete("/v1/files/{file_id}", delete_file)
