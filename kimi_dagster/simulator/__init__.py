"""A local simulator of the Kimi (Moonshot AI) chat API, faithful where the project depends on it.

Run ``python -m kimi_dagster.simulator`` (or ``kimi-dagster simulate``), or from Python::

    with start_simulator(tier=0, latency=0.05) as sim:
        ...  # point the client at sim.base_url with any "sk-..." key
        assert sum(line["cost_usd"] for line in sim.bill()) > 0

What it simulates, as ``/work/shared/kimi-api.md`` describes the provider:

- ``POST /v1/chat/completions`` in the OpenAI-compatible wire format, checked in the gateway's
  order: auth (401), body validation (400 ``invalid_request_error``, including the [0, 1]
  temperature range, the fixed sampling of kimi-k2.5/k2.6 and input + max_tokens over the
  context window), unknown model (404), exhausted balance (429 ``exceeded_current_quota_error``),
  rate limits (429 ``rate_limit_reached_error`` naming the limit and "please try again after N
  seconds"), fault injection, latency, then a 200 that is billed.
- Per-account limits of tiers 0-5 over sliding windows of admitted requests: concurrency, RPM,
  TPM and TPD, with TPM/TPD charged ``prompt_tokens + max_tokens`` (default 1024) at admission.
- Deterministic replies (:func:`expected_reply`), ``reasoning_content`` for thinking models,
  ``finish_reason`` "length" at max_tokens, JSON-object content under ``response_format``.
- Automatic prefix caching on the K2 family, prices per model (60 % for the Batch API), the
  balance endpoint, the token-estimate endpoint, ``GET /v1/models``.
- The Files and Batch APIs with the batch lifecycle on configurable delays.
- Admin routes under ``/_sim/`` (no auth): ``bill``, ``requests``, ``stats``, ``config``
  (live changes, e.g. the provider halving RPM mid-run) and ``reset``.

Simplifications, stated so that nobody mistakes them for the provider's behaviour:

- Only complete 200 answers are billed; errors, resets, hangs, malformed bodies and requests
  the client abandons are free (the provider's exact policy there is undocumented).
- Tokens come from :func:`count_tokens`, a fixed approximation of a BPE tokenizer; the real
  counts differ. It is the ground truth here: ``usage.prompt_tokens`` and the estimate
  endpoint both use it. Project code must not import it (its client estimates on its own).
- A prefix-cache hit is all-or-nothing on a first system message of >= 64 tokens that the same
  model has already answered; real caching works on arbitrary prefixes and blocks.
- Replies are pseudo-words, JSON replies ignore the schema, ``n`` > 1 repeats one reply, there
  is no streaming (``stream: true`` is a 400), no tool calling and no images.
- Error messages follow the provider's types and gist, not its exact wording.
- The balance is unlimited unless ``--balance`` is given (then it reports 1,000,000 USD less the
  spend); the account is ``org-sim``.
- The request log (``/_sim/requests``) holds chat requests only.

Markers, for tests that need one item to fail in a known way:

- ``[[sim:fail=KIND:N]]`` anywhere in a message makes the first N requests with that exact
  request content fail with KIND, then it succeeds. KIND is one of server_error, overload,
  rate_limit, quota, reset, hang, malformed, content_filter, unauthorized, permission,
  not_found. A marker counts only once a request is admitted past the rate limits.
- ``[[sim:content_filter]]`` is always rejected: 400 ``content_filter``.
- In a batch file a marked line fails (up to N times) into the error file.
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
