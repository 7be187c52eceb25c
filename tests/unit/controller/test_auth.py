"""Password hashing and the login rate limiter."""
from __future__ import annotations

import pytest

from vantage.controller.auth import (
    AuthSettings,
    LoginRateLimiter,
    hash_password,
    verify_password,
)
from vantage.controller.errors import TooManyRequests


def test_scrypt_hash_verifies_and_is_salted():
    first = hash_password("correct horse", n=1024)
    assert first.startswith("scrypt$1024$8$1$")
    assert verify_password("correct horse", first)
    assert not verify_password("correct hors", first)
    assert hash_password("correct horse", n=1024) != first
    assert not verify_password("x", "not-a-hash")
    assert not verify_password("x", "bcrypt$1$2$3$4$5")


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_limiter_locks_a_user_then_releases_after_the_window():
    clock = FakeClock()
    limiter = LoginRateLimiter(AuthSettings(max_failures_per_user=3, failure_window=60),
                               clock=clock)
    for _ in range(3):
        limiter.check("admin", "10.0.0.1")
        limiter.failed("admin", "10.0.0.1")
    with pytest.raises(TooManyRequests) as info:
        limiter.check("admin", "10.0.0.2")
    assert 0 < info.value.retry_after <= 61
    limiter.check("other", "10.0.0.3")  # other users are unaffected
    clock.now += 61
    limiter.check("admin", "10.0.0.1")


def test_limiter_counts_per_client_and_success_resets_the_user():
    clock = FakeClock()
    limiter = LoginRateLimiter(AuthSettings(max_failures_per_user=3,
                                            max_failures_per_client=4, failure_window=60),
                               clock=clock)
    limiter.failed("a", "10.0.0.9")
    limiter.failed("a", "10.0.0.9")
    limiter.succeeded("a")
    limiter.check("a", None)
    for user in ("b", "c", "d", "e"):
        limiter.failed(user, "10.0.0.9")
    with pytest.raises(TooManyRequests, match="client 10.0.0.9"):
        limiter.check("f", "10.0.0.9")
