"""Files and Batch API over real HTTP: uploads, the lifecycle, cancel, expiry, partial failure."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest

from kimi_dagster.simulator import MODELS, SimulatorProcess, cost_usd, expected_reply

from .simtools import chat, error_of

TERMINAL = {"completed", "failed", "expired", "cancelled"}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def line(custom_id: str, body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": body,
    } | changes


def upload(client: httpx.Client, content: bytes, name: str = "in.jsonl", purpose: str = "batch"):
    return client.post("/files", files={"file": (name, content)}, data={"purpose": purpose})


def start(client: httpx.Client, lines: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
    uploaded = upload(client, jsonl(lines))
    assert uploaded.status_code == 200, uploaded.text
    body = {
        "input_file_id": uploaded.json()["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    } | params
    created = client.post("/batches", json=body)
    assert created.status_code == 200, created.text
    return created.json()


def wait(client: httpx.Client, batch_id: str, until: set[str] = TERMINAL) -> tuple[dict, set[str]]:
    """Poll a batch until its status is in ``until``; returns it and every status seen."""
    seen: set[str] = set()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        batch = client.get(f"/batches/{batch_id}").json()
        seen.add(batch["status"])
        if batch["status"] in until:
            return batch, seen
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} stayed {seen}")


def read_lines(client: httpx.Client, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [
        orjson.loads(raw) for raw in client.get(f"/files/{file_id}/content").content.splitlines()
    ]


def test_batch_lifecycle_with_partial_failure(sim: SimulatorProcess, client: httpx.Client):
    bodies = {f"ok-{i}": chat("kimi-k2.6", f"batch item {i}", max_tokens=100) for i in range(8)}
    bodies["marked"] = chat("kimi-k2.6", "flaky [[sim:fail=server_error:1]]")
    bodies["filtered"] = chat("kimi-k2.6", "bad [[sim:content_filter]]")
    bodies["invalid"] = chat("kimi-k2.6", "warm", temperature=0.7)
    created = start(
        client, [line(cid, body) for cid, body in bodies.items()], metadata={"run": "t"}
    )
    assert created["status"] == "validating" and created["metadata"] == {"run": "t"}
    assert created["expires_at"] - created["created_at"] == 24 * 3600

    batch, seen = wait(client, created["id"])
    assert batch["status"] == "completed"
    assert "in_progress" in seen
    assert batch["request_counts"] == {"total": 11, "completed": 8, "failed": 3}
    for stamp in ("in_progress_at", "finalizing_at", "completed_at"):
        assert batch[stamp] >= batch["created_at"]
    assert batch["failed_at"] is None and batch["cancelled_at"] is None

    outputs = read_lines(client, batch["output_file_id"])
    assert sorted(o["custom_id"] for o in outputs) == sorted(f"ok-{i}" for i in range(8))
    for output in outputs:
        assert output["error"] is None and output["response"]["status_code"] == 200
        completion = output["response"]["body"]
        assert completion["object"] == "chat.completion"
        expected = expected_reply(bodies[output["custom_id"]])
        assert completion["choices"][0]["message"]["content"] == expected.content
        assert completion["usage"]["completion_tokens"] == expected.completion_tokens

    errors = {e["custom_id"]: e for e in read_lines(client, batch["error_file_id"])}
    assert {cid: e["response"]["status_code"] for cid, e in errors.items()} == {
        "marked": 500,
        "filtered": 400,
        "invalid": 400,
    }
    assert errors["filtered"]["error"]["type"] == "content_filter"
    assert errors["invalid"]["response"]["body"]["error"]["type"] == "invalid_request_error"

    bill = sim.bill()
    assert sorted(b["request_id"] for b in bill) == sorted(f"ok-{i}" for i in range(8))
    for entry in bill:
        assert entry["batch"] is True
        full = cost_usd(MODELS["kimi-k2.6"], entry["prompt_tokens"], entry["completion_tokens"], 0)
        assert entry["cost_usd"] == pytest.approx(0.6 * full, abs=1e-12)

    again = start(client, [line("marked", bodies["marked"])])  # the marker failed once only
    assert wait(client, again["id"])[0]["request_counts"]["completed"] == 1


@pytest.mark.parametrize(
    ("case", "content", "name", "purpose"),
    [
        ("duplicate custom_id", jsonl([line("a", chat()), line("a", chat())]), "f.jsonl", "batch"),
        ("wrong url", jsonl([line("a", chat(), url="/v1/embeddings")]), "f.jsonl", "batch"),
        ("wrong method", jsonl([line("a", chat(), method="GET")]), "f.jsonl", "batch"),
        (
            "two models",
            jsonl([line("a", chat()), line("b", chat("kimi-k2.5"))]),
            "f.jsonl",
            "batch",
        ),
        ("not json", b"{nope\n", "f.jsonl", "batch"),
        ("empty", b"\n", "f.jsonl", "batch"),
        ("not .jsonl", jsonl([line("a", chat())]), "f.csv", "batch"),
        ("wrong purpose", jsonl([line("a", chat())]), "f.jsonl", "file-extract"),
    ],
)
def test_bad_uploads_are_400(
    client: httpx.Client, case: str, content: bytes, name: str, purpose: str
) -> None:
    assert error_of(upload(client, content, name, purpose))[:2] == (400, "invalid_request_error")


def test_file_endpoints(client: httpx.Client) -> None:
    content = jsonl([line("a", chat())])
    stored = upload(client, content).json()
    assert stored["bytes"] == len(content) and stored["purpose"] == "batch"
    assert client.get(f"/files/{stored['id']}").json() == stored
    assert client.get(f"/files/{stored['id']}/content").content == content
    assert client.delete(f"/files/{stored['id']}").json()["deleted"] is True
    assert error_of(client.get(f"/files/{stored['id']}"))[0] == 404
    request = {
        "input_file_id": stored["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    assert error_of(client.post("/batches", json=request))[0] == 404


def test_batch_request_is_validated(client: httpx.Client) -> None:
    file_id = upload(client, jsonl([line("a", chat())])).json()["id"]
    base = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    for change in (
        {"completion_window": "1h"},
        {"completion_window": "8d"},
        {"endpoint": "/v1/embeddings"},
        {"metadata": {"n": 1}},
    ):
        assert error_of(client.post("/batches", json=base | change))[0] == 400, change
    assert client.post("/batches", json=base | {"completion_window": "7d"}).status_code == 200


def test_model_outside_the_batch_api_fails_the_batch(client: httpx.Client) -> None:
    batch, _ = wait(client, start(client, [line("a", chat("kimi-k2-0905-preview"))])["id"])
    assert batch["status"] == "failed" and batch["failed_at"]
    assert batch["errors"]["data"][0]["code"] == "model_not_supported"
    assert batch["output_file_id"] is None and batch["error_file_id"] is None


def test_cancel_keeps_the_finished_lines(sim: SimulatorProcess, client: httpx.Client) -> None:
    sim.configure(batch_delays=(0.1, 4.0, 0.3))
    lines = [line(f"c{i}", chat("kimi-k2.5", f"cancel me {i}")) for i in range(40)]
    created = start(client, lines)
    wait(client, created["id"], {"in_progress"})
    time.sleep(0.5)
    cancelled = client.post(f"/batches/{created['id']}/cancel").json()
    assert cancelled["status"] == "cancelling" and cancelled["cancelling_at"]
    batch, _ = wait(client, created["id"])
    assert batch["status"] == "cancelled" and batch["cancelled_at"]
    done = batch["request_counts"]["completed"]
    assert 0 < done < 40
    assert len(read_lines(client, batch["output_file_id"])) == done == len(sim.bill())
    assert error_of(client.post(f"/batches/{created['id']}/cancel"))[0] == 400


def test_expiry_leaves_finished_lines_in_the_output(
    sim: SimulatorProcess, client: httpx.Client
) -> None:
    sim.configure(expire_batches=True)
    lines = [line(f"e{i}", chat("kimi-k2.6", f"expire {i}")) for i in range(40)]
    batch, _ = wait(client, start(client, lines)["id"])
    assert batch["status"] == "expired" and batch["expired_at"]
    assert batch["request_counts"] == {"total": 40, "completed": 20, "failed": 0}
    assert len(read_lines(client, batch["output_file_id"])) == 20


def test_line_failure_probability(sim: SimulatorProcess, client: httpx.Client) -> None:
    sim.configure(batch_line_failure=1.0)
    batch, _ = wait(client, start(client, [line(f"f{i}", chat()) for i in range(5)])["id"])
    assert batch["request_counts"] == {"total": 5, "completed": 0, "failed": 5}
    assert batch["output_file_id"] is None
    assert {e["response"]["status_code"] for e in read_lines(client, batch["error_file_id"])} == {
        500
    }
    assert sim.bill() == []


def test_listing_pages_newest_first(client: httpx.Client) -> None:
    ids = [start(client, [line("a", chat(text=str(i)))])["id"] for i in range(3)]
    page = client.get("/batches", params={"limit": 2}).json()
    assert [b["id"] for b in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    rest = client.get("/batches", params={"limit": 2, "after": page["last_id"]}).json()
    assert [b["id"] for b in rest["data"]] == ids[:1] and rest["has_more"] is False
    assert error_of(client.get("/batches", params={"limit": 0}))[0] == 400
