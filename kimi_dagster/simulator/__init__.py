"""A local simulator of the Kimi (Moonshot AI) chat API, faithful where the project depends on it.

Run ``python -m kimi_dagster.simulator`` (``--help`` lists the flags), or from Python::

    with start_simulator(tier=0, latency=0.05) as sim:
        ...  # point the client at sim.base_url with any "Bearer sk-..." key
        assert all(line["cost_usd"] > 0 for line in sim.bill())
        sim.configure(rpm=1)  # the provider lowers a limit mid-run

Defaults: Tier 5 limits, 0.2 s latency (+-10 % jitter), replies of 20 to 200 tokens, seed 0,
no faults, unlimited balance, any key. Modules: ``models`` (catalogue and prices), ``tokens``,
``replies``, ``validation``, ``gateway`` (limits), ``faults``, ``completions``, ``ledger``,
``state``, ``app`` (routes), ``files``, ``batches``, ``cli``, ``process`` (start/stop helper).

What it simulates, as the project's notes on the provider's documentation describe it:

- ``POST /v1/chat/completions`` in the OpenAI-compatible wire format, checked in the gateway's
  order: auth (401), body validation (400 ``invalid_request_error``, including the [0, 1]
  temperature range, the fixed sampling of kimi-k2.5/k2.6 and input + max_tokens over the
  context window), unknown model (404), exhausted balance (429 ``exceeded_current_quota_error``),
  rate limits (429 ``rate_limit_reached_error`` naming the limit and "please try again after N
  seconds"), fault injection, latency, then a 200 that is billed.
- Per-account limits of tiers 0-5 over sliding windows of admitted requests: concurrency, RPM,
  TPM and TPD, with TPM/TPD charged ``prompt_tokens + max_tokens`` (default 1024) at admission.
  ``X-RateLimit-*`` headers only with ``--ratelimit-headers``.
- Deterministic replies (:func:`expected_reply`; ``SimulatorProcess.expected_reply`` applies
  the running config), ``reasoning_content`` for thinking models (kimi-k2.5/k2.6 unless
  ``thinking`` is disabled, kimi-k2-thinking always), ``finish_reason`` "length" at max_tokens,
  a JSON object under ``response_format``.
- Faults drawn per admitted request from ``random.Random(seed)``: 5xx (a JSON 500 or a 502/503/
  504 page), 429 overload, 429 quota, a TCP reset, a hang (reset after ``hang_seconds``), a 200
  with truncated JSON.
- Prefix caching on the K2 family, prices per model, the balance, token-estimate and models
  endpoints, and the Files and Batch APIs (Batch at 60 % of the price, no rate limits).
- Admin routes under ``/_sim/`` (no auth): ``GET bill``, ``GET requests``, ``GET stats``,
  ``POST config`` (a partial config, applied live) and ``POST reset``.

Simplifications, stated so that nobody mistakes them for the provider's behaviour:

- Only complete 200 answers (and completed batch lines) are billed; errors, resets, hangs,
  malformed bodies and requests the client abandons are free.
- Tokens come from :func:`count_tokens`, a fixed approximation of a BPE tokenizer; the real
  counts differ. It is the ground truth here: ``usage.prompt_tokens`` and the estimate endpoint
  both use it. Project code must not import it: its client estimates on its own.
- A prefix-cache hit is all-or-nothing: a first system message of >= 64 tokens that the same
  model has answered before counts as cached in full; real caching works on any prefix.
- Replies are pseudo-words (at least the marker and one word, whatever ``reply_tokens`` says),
  JSON replies ignore the schema, ``n`` > 1 repeats one reply, there is no streaming
  (``stream: true`` is a 400), no tool calling and no image understanding; ``thinking`` is
  ignored by models without it.
- Error types and statuses are the provider's; message wording is only close to it.
- USD only (the .cn platform's CNY is not simulated); the account is ``org-sim``. Without
  ``--balance`` the balance is unlimited and reports a notional 1,000,000 USD less the spend.
- The request log (``/_sim/requests``) holds chat requests only.

Markers, for tests that need one item to fail in a known way:

- ``[[sim:fail=KIND:N]]`` in a message makes the first N requests with that exact request
  content (model, messages, response_format, thinking) fail with KIND, then it succeeds. KIND is
  one of server_error, overload, rate_limit, quota, reset, hang, malformed, content_filter,
  unauthorized, permission, not_found. A marker is counted only for requests admitted past the
  rate limits, and those requests count in the windows.
- ``[[sim:content_filter]]`` is always rejected: 400 ``content_filter``.
- In a batch file a marked line fails (up to N times) into the error file: 400 for
  content_filter, 500 ``server_error`` for every other kind.
"""

from kimi_dagster.simulator.cli import build_parser, main
from kimi_dagster.simulator.config import SimulatorConfig
from kimi_dagster.simulator.gateway import TIERS, Limits
from kimi_dagster.simulator.models import MODELS, ModelSpec, cost_usd
from kimi_dagster.simulator.process import SimulatorProcess, start_simulator
from kimi_dagster.simulator.replies import Reply, expected_reply
from kimi_dagster.simulator.tokens import count_tokens

__all__ = [
    "MODELS",
    "TIERS",
    "Limits",
    "ModelSpec",
    "Reply",
    "SimulatorConfig",
    "SimulatorProcess",
    "build_parser",
    "cost_usd",
    "count_tokens",
    "expected_reply",
    "main",
    "start_simulator",
]
