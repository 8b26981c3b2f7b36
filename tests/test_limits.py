"""The limiter's guarantees, checked with a controlled clock (and once with the real event loop)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from bisect import bisect_left
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimi_dagster.limits import TIERS, Limits, Permit, RateLimiter, resolve_limits

H = 0.985  # the default headroom
DAY = 86_400.0


class Sim:
    """A fake clock driving a limiter the way a caller does: it waits delay(), and requests in
    flight come back at their scheduled times."""

    def __init__(self, limits: Limits, **kwargs: float) -> None:
        self.now = 0.0
        self.limiter = RateLimiter(limits, clock=lambda: self.now, **kwargs)
        self._returns: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def advance(self, until: float) -> None:
        while self._returns and self._returns[0][0] <= until:
            at, _, back = heapq.heappop(self._returns)
            self.now = max(self.now, at)
            back()
        self.now = max(self.now, until)

    def send(
        self,
        tokens: int,
        latency: float,
        actual: int | None = None,
        then: Callable[[], None] | None = None,
    ) -> Permit:
        """Wait until admitted, admit, and schedule the release ``latency`` later."""
        while (wait := self.limiter.delay(tokens)) > 0:
            back = self._returns[0][0] if self._returns else math.inf
            assert back < math.inf or wait < math.inf, "waiting forever with nothing in flight"
            if back <= self.now + wait:
                self.advance(back)
            else:  # float rounding may leave a sliver of wait: always move forward
                self.now = max(self.now + wait, math.nextafter(self.now, math.inf))
        permit = self.limiter.admit(tokens)

        def back() -> None:
            self.limiter.release(permit, actual_tokens=actual)
            if then is not None:
                then()

        heapq.heappush(self._returns, (self.now + latency, next(self._seq), back))
        return permit


def saturate(sim: Sim, tokens: int, latency: float, horizon: float) -> list[float]:
    """Admission times of an endless queue of equal requests."""
    times = []
    while sim.now < horizon:
        times.append(sim.send(tokens, latency).admitted_at)
    return times


def per_second(times: list[float], start: float, end: float) -> float:
    return sum(start <= t < end for t in times) / (end - start)


# -- the sliding-window guarantee, for any stream ------------------------------------------------

requests = st.lists(
    st.tuples(
        st.floats(0.0, 1.0),  # size, as a fraction of the largest admissible request ...
        st.booleans(),  # ... or of a twentieth of it (many small requests)
        st.floats(0.0, 4.0),  # think time before it is sent
        st.floats(0.0, 90.0),  # time in flight
        st.none() | st.floats(0.7, 1.3),  # actual charge / estimate, reported at release
        st.none() | st.floats(0.0, 10.0),  # a limit-429 on return, with this wait
    ),
    min_size=10,
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(
    concurrency=st.integers(1, 8),
    rpm=st.integers(1, 120),
    tpm=st.integers(100, 20_000),
    days=st.none() | st.integers(1, 4),
    stream=requests,
)
def test_every_window_stays_within_the_limits(concurrency, rpm, tpm, days, stream):
    tpd = None if days is None else days * tpm
    sim = Sim(Limits(concurrency, rpm, tpm, tpd))
    largest = H * min(tpm, tpd or tpm)
    times: list[float] = []
    estimated: list[int] = []
    actual: list[int] = []
    revised_before: list[float] = []  # index of the first admission that saw the actual charge
    returned = 0
    paused_until = -math.inf

    for size, small, think, latency, ratio, retry_after in stream:
        tokens = max(1, math.floor(size * largest / (20 if small else 1)))
        k = len(times)
        real = tokens if ratio is None else round(tokens * ratio)

        def back(k: int = k, revised: bool = ratio is not None, wait=retry_after) -> None:
            nonlocal returned, paused_until
            returned += 1
            if revised:
                revised_before[k] = len(times)
            if wait is not None:
                sim.limiter.penalize(wait)
                paused_until = max(paused_until, sim.now + wait)

        sim.advance(sim.now + think)
        permit = sim.send(tokens, latency, actual=None if ratio is None else real, then=back)
        factor = sim.limiter.stats().rate_factor
        assert len(times) + 1 - returned <= max(1, math.floor(concurrency * factor + 1e-9))
        assert permit.admitted_at >= paused_until
        times.append(permit.admitted_at)
        estimated.append(tokens)
        actual.append(real)
        revised_before.append(math.inf)

    def charged(j: int, last: int) -> int:
        """Admission j's charge as recorded when admission ``last`` was made."""
        return actual[j] if revised_before[j] <= last else estimated[j]

    def check(span: float, cap: float | None, max_requests: int | None) -> None:
        for i, start in enumerate(times):
            last = bisect_left(times, start + span) - 1
            if max_requests is not None:
                assert last - i + 1 <= max_requests
            if cap is not None:
                assert sum(charged(j, last) for j in range(i, last + 1)) <= cap

    check(60.0, H * tpm, max(1, math.floor(H * rpm + 1e-9)))
    if tpd is not None:
        check(DAY, H * tpd, None)


def test_a_request_over_the_whole_budget_is_refused_not_queued():
    sim = Sim(Limits(concurrency=5, rpm=100, tpm=10_000, tpd=5_000))
    assert sim.limiter.delay(4_926) == math.inf
    with pytest.raises(ValueError, match="4,926 tokens can never be admitted: at most 4,925"):
        sim.limiter.admit(4_926)
    assert sim.limiter.admit(4_925).tokens == 4_925


def test_the_day_counts_in_one_second_grains_never_early():
    sim = Sim(Limits(concurrency=5, rpm=6_000, tpm=1_000_000, tpd=1_000))  # 985 tokens a day
    sim.limiter.admit(400)
    sim.advance(0.5)
    sim.limiter.admit(400)  # shares the first one's grain
    sim.send(500, latency=1.0)
    assert DAY + 0.5 <= sim.now <= DAY + 1.0 + 1e-6


def test_admit_refuses_to_run_ahead_of_delay():
    sim = Sim(Limits(concurrency=5, rpm=60, tpm=10_000))
    sim.limiter.admit(10)
    assert sim.limiter.delay(10) > 0
    with pytest.raises(RuntimeError, match="not admissible"):
        sim.limiter.admit(10)


def test_delay_only_reads():
    sim = Sim(Limits(concurrency=5, rpm=60, tpm=10_000))
    sim.limiter.admit(3_000)
    sim.advance(61.0)
    before = sim.limiter.delay(5_000)
    assert [sim.limiter.delay(5_000) for _ in range(3)] == [before] * 3
    assert sim.limiter.stats().tokens_last_minute == 0
    assert sim.limiter.stats().in_flight == 1


# -- pacing and throughput -----------------------------------------------------------------------


def test_rpm_bound_stream_paces_from_the_start_and_runs_at_the_limit():
    limits = TIERS[3]
    times = saturate(Sim(limits), tokens=164, latency=2.0, horizon=300.0)
    pace = H * limits.rpm / 60
    assert 0.9 * pace <= per_second(times, 0.0, 1.0) <= pace + 1  # no opening burst, no ramp
    ratio = per_second(times, 60.0, 300.0) * 60 / limits.rpm
    assert ratio >= 0.97, ratio


def test_tpm_bound_stream_runs_at_the_limit():
    limits = TIERS[3]
    times = saturate(Sim(limits), tokens=2_500, latency=2.0, horizon=300.0)
    pace = H * limits.tpm / 60
    assert 0.9 * pace <= 2_500 * per_second(times, 0.0, 1.0) <= pace + 2_500
    ratio = per_second(times, 60.0, 300.0) * 2_500 * 60 / limits.tpm
    assert ratio >= 0.97, ratio


def test_concurrency_bound_stream_keeps_every_slot_busy():
    limits = TIERS[3]
    times = saturate(Sim(limits), tokens=164, latency=10.0, horizon=300.0)
    ratio = per_second(times, 60.0, 300.0) / (limits.concurrency / 10.0)
    assert ratio >= 0.995, ratio


def test_after_idling_the_burst_is_one_second_at_most():
    limits = Limits(concurrency=1_000, rpm=6_000, tpm=10_000_000)
    sim = Sim(limits)
    saturate(sim, tokens=10, latency=1.0, horizon=5.0)
    sim.advance(600.0)
    burst = 0
    while sim.limiter.delay(10) == 0:
        sim.limiter.admit(10)
        burst += 1
    assert 2 <= burst <= H * limits.rpm / 60 + 1


# -- reconciliation ------------------------------------------------------------------------------


def test_a_higher_actual_charge_makes_later_admissions_wait_for_it():
    sim = Sim(Limits(concurrency=5, rpm=6_000, tpm=6_000))  # 5,910 tokens a minute
    permit = sim.limiter.admit(2_000)
    sim.advance(1.0)
    sim.limiter.release(permit, actual_tokens=5_000)
    assert sim.limiter.stats().tokens_last_minute == 5_000
    assert sim.limiter.delay(1_000) == pytest.approx(59.0)  # until the 5,000 leave the window


def test_a_lower_actual_charge_frees_the_window_and_the_pace():
    sim = Sim(Limits(concurrency=5, rpm=6_000, tpm=6_000))
    permit = sim.limiter.admit(5_000)
    sim.limiter.release(permit, actual_tokens=1_000)
    assert sim.limiter.stats().tokens_last_minute == 1_000
    seconds_per_token = 60 / (H * 6_000)
    assert sim.limiter.delay(4_000) == pytest.approx(1_000 * seconds_per_token)


def test_a_charge_revised_after_leaving_the_window_changes_nothing():
    sim = Sim(Limits(concurrency=5, rpm=6_000, tpm=6_000))
    permit = sim.limiter.admit(3_000)
    sim.advance(61.0)
    sim.limiter.release(permit, actual_tokens=100)
    assert sim.limiter.stats().tokens_last_minute == 0
    sim.limiter.admit(5_900)
    assert sim.limiter.stats().tokens_last_minute == 5_900


def test_a_permit_is_released_once():
    sim = Sim(Limits(concurrency=1, rpm=60, tpm=1_000))
    permit = sim.limiter.admit(10)
    sim.limiter.release(permit)
    with pytest.raises(ValueError, match="already released"):
        sim.limiter.release(permit)
    assert sim.limiter.stats().in_flight == 0


# -- 429s ----------------------------------------------------------------------------------------

FAST = Limits(concurrency=10, rpm=60_000, tpm=10_000_000)


def test_penalize_pauses_admissions_for_the_named_wait():
    sim = Sim(FAST)
    sim.advance(10.0)
    sim.limiter.penalize(7.0)
    assert sim.limiter.stats().paused_until == 17.0
    assert sim.limiter.delay(1) == 7.0
    with pytest.raises(RuntimeError):
        sim.limiter.admit(1)
    sim.advance(17.0)
    assert sim.limiter.delay(1) == 0.0
    assert sim.limiter.stats().paused_until is None


def test_penalize_without_a_wait_still_backs_off():
    sim = Sim(FAST)
    sim.limiter.penalize()
    assert 0 < sim.limiter.delay(1) <= 5.0


def test_a_burst_of_429s_cuts_the_rate_once():
    sim = Sim(FAST)
    for at in (0.0, 0.5, 1.0, 1.9):
        sim.advance(at)
        sim.limiter.penalize(0.0)
    stats = sim.limiter.stats()
    assert stats.rate_factor == pytest.approx(0.7)
    assert stats.rate_limited == 4
    sim.advance(2.0)
    sim.limiter.penalize(0.0)
    assert sim.limiter.stats().rate_factor == pytest.approx(0.49)


def test_the_rate_recovers_additively_and_never_falls_below_the_floor():
    sim = Sim(FAST)
    for at in range(0, 40, 2):
        sim.advance(float(at))
        sim.limiter.penalize(0.0)
    assert sim.limiter.stats().rate_factor == pytest.approx(0.05)
    last = 38.0
    sim.advance(last + 4.9)
    assert sim.limiter.stats().rate_factor == pytest.approx(0.05)
    sim.advance(last + 5.0)
    assert sim.limiter.stats().rate_factor == pytest.approx(0.10)
    sim.advance(last + 94.9)
    assert sim.limiter.stats().rate_factor < 1.0
    sim.advance(last + 95.0)
    assert sim.limiter.stats().rate_factor == 1.0


def test_a_cut_rate_slows_the_pace_and_narrows_concurrency():
    limits = Limits(concurrency=10, rpm=600, tpm=10_000_000)
    sim = Sim(limits)
    sim.limiter.penalize(0.0)
    times = saturate(sim, tokens=1, latency=0.0, horizon=4.9)
    assert per_second(times, 0.0, 4.9) * 4.9 <= 0.7 * H * limits.rpm / 60 * 4.9 + 1

    sim = Sim(limits)
    sim.limiter.penalize(0.0)
    for _ in range(7):
        sim.send(1, latency=100.0)
    assert sim.limiter.delay(1) == math.inf
    assert sim.limiter.stats().in_flight == 7


def test_a_429_naming_a_lower_limit_is_used_until_five_quiet_minutes_pass():
    limits = Limits(concurrency=50, rpm=6_000, tpm=10_000_000)
    sim = Sim(limits)
    saturate(sim, tokens=10, latency=0.5, horizon=30.0)
    sim.limiter.penalize(5.0, named=("rpm", 3_000))  # the provider halved RPM
    assert sim.limiter.limits.rpm == 3_000
    times = saturate(sim, tokens=10, latency=0.5, horizon=300.0)
    # the pause, then the lower limit's pace once the factor recovers (windows stay exact)
    assert per_second(times, 200.0, 300.0) * 60 == pytest.approx(H * 3_000, rel=0.01)
    assert sim.limiter.limits.rpm == 3_000
    sim.advance(31.0 + 300.0)
    assert sim.limiter.limits == limits  # 5 minutes without a 429: the configured limits again
    times = saturate(sim, tokens=10, latency=0.5, horizon=460.0)
    assert per_second(times, 400.0, 460.0) * 60 == pytest.approx(H * 6_000, rel=0.01)


def test_a_named_limit_is_divided_by_the_share_and_never_raises_ours():
    account = Limits(concurrency=300, rpm=6_000, tpm=3_000_000)
    sim = Sim(account.share(3), share=3)
    sim.limiter.penalize(1.0, named=("tpm", 1_500_000))
    sim.limiter.penalize(1.0, named=("concurrency", 150))
    sim.limiter.penalize(1.0, named=("rpm", 9_000))  # above ours: not a lowering
    sim.limiter.penalize(1.0, named=("tpd", 10))  # the day is not adopted
    assert sim.limiter.limits == Limits(concurrency=50, rpm=2_000, tpm=500_000)


# -- acquire() on the real event loop ------------------------------------------------------------


def test_acquire_serves_waiters_in_arrival_order():
    # A half-second window of 985 tokens: B (900) must wait for A (400) to leave it; C and D
    # would fit at once beside A, but may not overtake B.
    limiter = RateLimiter(Limits(concurrency=10, rpm=1_000, tpm=1_000), window=0.5)
    admitted: list[tuple[str, Permit]] = []

    async def request(name: str, tokens: int) -> None:
        admitted.append((name, await limiter.acquire(tokens)))

    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            for name, tokens in (("A", 400), ("B", 900), ("C", 50), ("D", 50)):
                group.create_task(request(name, tokens))

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 2.0
    assert [name for name, _ in admitted] == ["A", "B", "C", "D"]
    at = {name: permit.admitted_at for name, permit in admitted}
    assert at["B"] - at["A"] >= 0.5
    assert at["D"] - at["B"] >= 0.5


def test_acquire_refuses_an_impossible_request_at_once():
    limiter = RateLimiter(Limits(concurrency=1, rpm=60, tpm=1_000))

    async def main() -> None:
        await limiter.acquire(10)  # holds the only slot
        with pytest.raises(ValueError, match="can never be admitted"):
            await asyncio.wait_for(limiter.acquire(1_000), timeout=1.0)

    asyncio.run(main())


def test_acquire_waiting_for_a_slot_wakes_on_release():
    limiter = RateLimiter(Limits(concurrency=1, rpm=6_000, tpm=1_000_000))

    async def main() -> float:
        first = await limiter.acquire(1)
        waiter = asyncio.create_task(limiter.acquire(1))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        released = time.monotonic()
        limiter.release(first)
        second = await asyncio.wait_for(waiter, timeout=1.0)
        return second.admitted_at - released

    assert 0 <= asyncio.run(main()) < 0.1


# -- limits --------------------------------------------------------------------------------------


def test_tiers_match_the_providers_table():
    assert {tier: (lim.concurrency, lim.rpm, lim.tpm, lim.tpd) for tier, lim in TIERS.items()} == {
        0: (1, 3, 500_000, 1_500_000),
        1: (50, 200, 2_000_000, None),
        2: (100, 500, 3_000_000, None),
        3: (200, 5_000, 3_000_000, None),
        4: (400, 5_000, 4_000_000, None),
        5: (1_000, 10_000, 5_000_000, None),
    }


def test_resolve_limits_overrides_the_preset():
    assert resolve_limits() == TIERS[3]
    assert resolve_limits(5, rpm=20_000) == Limits(1_000, 20_000, 5_000_000)
    assert resolve_limits(1, tpd=9_000_000) == Limits(50, 200, 2_000_000, 9_000_000)
    assert resolve_limits(None, concurrency=4, rpm=40, tpm=400) == Limits(4, 40, 400)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: resolve_limits(7), "unknown tier 7"),
        (lambda: resolve_limits(True), "unknown tier True"),
        (lambda: resolve_limits(3, rpm=0), "rpm must be .* got 0"),
        (lambda: resolve_limits(2, tpd=-5), "tpd must be .* got -5"),
        (lambda: resolve_limits(3, tpm=1.5), "tpm must be .* got 1.5"),
        (lambda: resolve_limits(None, concurrency=4, rpm=40), "without a tier, give tpm"),
        (lambda: TIERS[3].share(0), "parts must be .* got 0"),
        (lambda: RateLimiter(TIERS[3], headroom=1.2), "headroom"),
    ],
)
def test_bad_values_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_share_splits_the_account_and_keeps_at_least_one():
    assert TIERS[3].share(3) == Limits(66, 1_666, 1_000_000)
    assert TIERS[0].share(2) == Limits(1, 1, 250_000, 750_000)
    assert TIERS[5].share(1) == TIERS[5]
