"""Backend health table: cool-downs, probing, and Retry-After precedence."""

from __future__ import annotations

import pytest

from ext_proc.routing.health import BASE_COOLDOWN, HealthTable, State, provider_fault


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_retry_after_sets_the_wait_and_one_probe_follows() -> None:
    clock = Clock()
    h = HealthTable(clock)
    h.failure("a", 429, retry_after=5)
    assert h.skip("a") and h.retry_after("a") == pytest.approx(5)
    clock.t += 5
    assert h.available("a") and h.state("a") == State.PROBING  # exactly one probe...
    assert h.skip("a")  # ...the others keep skipping until it succeeds
    h.success("a")
    assert h.state("a") == State.HEALTHY and h.available("a")


def test_inferred_failure_does_not_override_a_retry_after() -> None:
    clock = Clock()
    h = HealthTable(clock)
    h.failure("a", 429, retry_after=0.05)
    h.failure("a")  # the router stage also saw the request fail over
    h.failure("a")
    assert h.retry_after("a") == pytest.approx(0.05)


def test_failures_without_response_back_off_exponentially() -> None:
    clock = Clock()
    h = HealthTable(clock)
    h.failure("a")
    assert h.available("a")  # one failure is not enough
    h.failure("a")
    assert h.skip("a")
    clock.t += BASE_COOLDOWN
    assert h.available("a")  # probe
    h.failure("a")  # the probe failed: twice the wait
    clock.t += BASE_COOLDOWN
    assert h.skip("a")
    clock.t += BASE_COOLDOWN
    assert h.available("a")


def test_a_released_probe_goes_to_the_next_request() -> None:
    clock = Clock()
    h = HealthTable(clock)
    h.failure("a")
    h.failure("a")
    clock.t += BASE_COOLDOWN
    assert h.available("a") and h.skip("a")  # one probe granted, the others skip
    h.release("a")  # that request went elsewhere
    assert h.available("a") and h.state("a") == State.PROBING  # the next one probes
    h.release("b")  # unknown or healthy backends are left alone
    assert h.state("b") == State.HEALTHY


def test_an_invalid_answer_cools_down_at_once_and_for_longer() -> None:
    """One invalid answer the router stage had to abort proves the fault: no second needed,
    and the first wait is CERTAIN_COOLDOWN, not the 1 s of a first ordinary failure."""
    from ext_proc.routing.health import CERTAIN_COOLDOWN

    clock = Clock()
    h = HealthTable(clock)
    h.failure("a", 502, certain=True)
    assert h.skip("a") and h.state("a") == State.COOLING
    clock.t += CERTAIN_COOLDOWN - 0.1
    assert h.skip("a")
    clock.t += 0.2
    assert h.available("a") and h.state("a") == State.PROBING
    h.failure("a", 502, certain=True)  # the probe met it again: the wait doubles
    clock.t += CERTAIN_COOLDOWN + 0.1
    assert h.skip("a")


def test_whose_fault_a_status_is() -> None:
    """The backend's: no answer, 5xx, its credential refused, its model not there (404: the gateway
    built the path and named the model), a rate limit. The client's: any other 4xx."""
    assert all(provider_fault(s) for s in (0, 401, 403, 404, 429, 500, 502, 503, 529))
    assert not any(provider_fault(s) for s in (200, 400, 409, 413, 422))
