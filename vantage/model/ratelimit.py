"""Rate and concurrency limits, as Avi spells them (RateProfile, performance limits)."""
from __future__ import annotations

from enum import Enum
from typing import Annotated

from pydantic import Field

from vantage.model.base import Struct


class RateLimitActionType(str, Enum):
    RL_ACTION_NONE = "RL_ACTION_NONE"
    RL_ACTION_DROP_CONN = "RL_ACTION_DROP_CONN"
    RL_ACTION_RESET_CONN = "RL_ACTION_RESET_CONN"
    RL_ACTION_CLOSE_CONN = "RL_ACTION_CLOSE_CONN"
    RL_ACTION_LOCAL_RSP = "RL_ACTION_LOCAL_RSP"


class RateLimiter(Struct):
    count: Annotated[int, Field(ge=1, le=1_000_000_000)]
    period: Annotated[int, Field(ge=1, le=1_000_000_000)] = 1
    """Seconds."""
    burst_sz: Annotated[int, Field(ge=0, le=1_000_000_000)] = 0


class RateLimitAction(Struct):
    type: RateLimitActionType = RateLimitActionType.RL_ACTION_LOCAL_RSP
    status_code: Annotated[int, Field(ge=200, le=599)] = 429
    """Status of the local response (RL_ACTION_LOCAL_RSP)."""


class RateProfile(Struct):
    rate_limiter: RateLimiter
    action: RateLimitAction = RateLimitAction()


class RateLimiterProfile(Struct):
    client_ip_requests_rate_limit: RateProfile | None = None
    """Requests per client address (HTTP); past it the action applies (429 by default)."""
    client_ip_connections_rate_limit: RateProfile | None = None
    """New connections per client address."""


class DosRateLimitProfile(Struct):
    rl_profile: RateLimiterProfile | None = None


class PerformanceLimits(Struct):
    max_concurrent_connections: Annotated[int, Field(ge=0, le=1_000_000_000)] = 0
    """Open client connections of the virtual service; 0 = unlimited. Past it new connections
    are refused (reset)."""
