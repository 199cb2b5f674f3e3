"""Token buckets per key, shared by the workers of one host, and the stored-bytes cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import APIError
from gateway.tenancy.keys import Tenant
from gateway.tenancy.limits import RateLimiter, check_storage, duration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_gets_its_minute_of_requests_then_waits_for_the_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(default_rpm=2, default_tpm=0, clock=clock)
    team = Tenant("team-a")
    assert limiter.admit(team).headers["x-ratelimit-remaining-requests"] == "1"
    assert limiter.admit(team).allowed
    refused = limiter.admit(team)
    assert (refused.allowed, refused.refused_by) == (False, "requests")
    assert refused.retry_after_s == pytest.approx(30.0)
    assert refused.error(team).headers["Retry-After"] == "30"
    clock.now += 30
    assert limiter.admit(team).allowed


def test_per_key_limits_replace_the_default_and_zero_means_none() -> None:
    limiter = RateLimiter(default_rpm=1, default_tpm=0)
    assert limiter.limits(Tenant("a", rpm=5)) == (5, 0)
    unlimited = Tenant("b", rpm=0)
    assert all(limiter.admit(unlimited).allowed for _ in range(10))
    assert limiter.admit(unlimited).headers == {}


def test_tokens_are_charged_after_the_answer_and_a_debt_refuses_until_repaid() -> None:
    clock = Clock()
    limiter = RateLimiter(default_rpm=0, default_tpm=600, clock=clock)
    team = Tenant("team-a")
    assert limiter.admit(team).allowed
    limiter.charge(team, 900)  # one request may overshoot: it was counted after it ran
    refused = limiter.admit(team)
    assert refused.refused_by == "tokens"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.retry_after_s == pytest.approx(30.1)  # 300 in debt + 1, at 10 per second
    clock.now += 31
    assert limiter.admit(team).allowed


def test_workers_sharing_a_folder_share_one_allowance(tmp_path: Path) -> None:
    one = RateLimiter(default_rpm=3, default_tpm=0, folder=str(tmp_path))
    two = RateLimiter(default_rpm=3, default_tpm=0, folder=str(tmp_path))
    team = Tenant("team-a")
    assert [one.admit(team).allowed, two.admit(team).allowed, one.admit(team).allowed] == [
        True,
        True,
        True,
    ]
    assert not two.admit(team).allowed
    assert RateLimiter(default_rpm=3, default_tpm=0).admit(team).allowed  # another host


def test_keys_have_separate_buckets() -> None:
    limiter = RateLimiter(default_rpm=1, default_tpm=0)
    assert limiter.admit(Tenant("a")).allowed
    assert not limiter.admit(Tenant("a")).allowed
    assert limiter.admit(Tenant("b")).allowed


def test_a_failing_database_lets_requests_through(tmp_path: Path, caplog) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    limiter = RateLimiter(default_rpm=1, default_tpm=0, folder=str(blocker / "x"))
    assert limiter.admit(Tenant("a")).allowed
    assert limiter.admit(Tenant("a")).allowed
    assert caplog.text.count("rate limits not applied") == 1  # logged once a minute


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.02, "20ms"), (1.0, "1s"), (1.5, "1.5s"), (360.0, "6m0s")]
)
def test_reset_durations_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_an_upload_past_the_keys_stored_bytes_is_refused_with_413() -> None:
    check_storage(Tenant("a"), stored=900, incoming=100, default=1000)
    check_storage(Tenant("a", batch_bytes=0), stored=10**9, incoming=1, default=1000)
    with pytest.raises(APIError) as refused:
        check_storage(Tenant("a"), stored=900, incoming=101, default=1000)
    assert (refused.value.status, refused.value.code) == (413, "storage_limit_exceeded")
    with pytest.raises(APIError):
        check_storage(Tenant("a", batch_bytes=10), stored=0, incoming=11, default=0)
