"""HTTP policy sets: ordered request/response rules (match, then act) a virtual service applies."""
from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, ClassVar

import pydantic
from pydantic import Field

from vantage.model.base import IpAddr, Port, Struct, VantageObject
from vantage.model.network import IpAddrPrefix, IpAddrRange


class StringMatchCriteria(str, Enum):
    BEGINS_WITH = "BEGINS_WITH"
    DOES_NOT_BEGIN_WITH = "DOES_NOT_BEGIN_WITH"
    CONTAINS = "CONTAINS"
    DOES_NOT_CONTAIN = "DOES_NOT_CONTAIN"
    ENDS_WITH = "ENDS_WITH"
    DOES_NOT_END_WITH = "DOES_NOT_END_WITH"
    EQUALS = "EQUALS"
    DOES_NOT_EQUAL = "DOES_NOT_EQUAL"
    REGEX_MATCH = "REGEX_MATCH"
    REGEX_DOES_NOT_MATCH = "REGEX_DOES_NOT_MATCH"


class MatchOperation(str, Enum):
    IS_IN = "IS_IN"
    IS_NOT_IN = "IS_NOT_IN"


class HdrMatchCriteria(str, Enum):
    HDR_EXISTS = "HDR_EXISTS"
    HDR_DOES_NOT_EXIST = "HDR_DOES_NOT_EXIST"
    HDR_BEGINS_WITH = "HDR_BEGINS_WITH"
    HDR_DOES_NOT_BEGIN_WITH = "HDR_DOES_NOT_BEGIN_WITH"
    HDR_CONTAINS = "HDR_CONTAINS"
    HDR_DOES_NOT_CONTAIN = "HDR_DOES_NOT_CONTAIN"
    HDR_ENDS_WITH = "HDR_ENDS_WITH"
    HDR_DOES_NOT_END_WITH = "HDR_DOES_NOT_END_WITH"
    HDR_EQUALS = "HDR_EQUALS"
    HDR_DOES_NOT_EQUAL = "HDR_DOES_NOT_EQUAL"


class HttpMethod(str, Enum):
    HTTP_METHOD_GET = "HTTP_METHOD_GET"
    HTTP_METHOD_HEAD = "HTTP_METHOD_HEAD"
    HTTP_METHOD_PUT = "HTTP_METHOD_PUT"
    HTTP_METHOD_DELETE = "HTTP_METHOD_DELETE"
    HTTP_METHOD_POST = "HTTP_METHOD_POST"
    HTTP_METHOD_OPTIONS = "HTTP_METHOD_OPTIONS"
    HTTP_METHOD_TRACE = "HTTP_METHOD_TRACE"
    HTTP_METHOD_CONNECT = "HTTP_METHOD_CONNECT"
    HTTP_METHOD_PATCH = "HTTP_METHOD_PATCH"


class MatchCase(str, Enum):
    SENSITIVE = "SENSITIVE"
    INSENSITIVE = "INSENSITIVE"


class QueryMatchCriteria(str, Enum):
    QUERY_MATCH_CONTAINS = "QUERY_MATCH_CONTAINS"
    QUERY_MATCH_DOES_NOT_CONTAIN = "QUERY_MATCH_DOES_NOT_CONTAIN"
    QUERY_MATCH_EXISTS = "QUERY_MATCH_EXISTS"
    QUERY_MATCH_DOES_NOT_EXIST = "QUERY_MATCH_DOES_NOT_EXIST"
    QUERY_MATCH_BEGINS_WITH = "QUERY_MATCH_BEGINS_WITH"
    QUERY_MATCH_DOES_NOT_BEGIN_WITH = "QUERY_MATCH_DOES_NOT_BEGIN_WITH"
    QUERY_MATCH_ENDS_WITH = "QUERY_MATCH_ENDS_WITH"
    QUERY_MATCH_DOES_NOT_END_WITH = "QUERY_MATCH_DOES_NOT_END_WITH"
    QUERY_MATCH_EQUALS = "QUERY_MATCH_EQUALS"
    QUERY_MATCH_DOES_NOT_EQUAL = "QUERY_MATCH_DOES_NOT_EQUAL"
    QUERY_MATCH_REGEX_MATCH = "QUERY_MATCH_REGEX_MATCH"
    QUERY_MATCH_REGEX_DOES_NOT_MATCH = "QUERY_MATCH_REGEX_DOES_NOT_MATCH"


def _check_regexes(patterns: list[str]) -> None:
    for i, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"match_str[{i}]: {pattern!r} is not a valid regular "
                             f"expression ({exc})") from None


class PathMatch(Struct):
    match_criteria: StringMatchCriteria
    match_str: Annotated[list[str], Field(min_length=1)]
    match_case: MatchCase = MatchCase.INSENSITIVE
    """Avi's default is INSENSITIVE."""

    @pydantic.model_validator(mode="after")
    def _regexes_compile(self) -> PathMatch:
        if self.match_criteria in (StringMatchCriteria.REGEX_MATCH,
                                   StringMatchCriteria.REGEX_DOES_NOT_MATCH):
            _check_regexes(self.match_str)
        return self


class QueryMatch(Struct):
    """Matches the query string (the part of the target after `?`, without it)."""

    match_criteria: QueryMatchCriteria
    match_str: list[str] = Field(default_factory=list)
    match_case: MatchCase = MatchCase.INSENSITIVE

    @pydantic.model_validator(mode="after")
    def _regexes_compile(self) -> QueryMatch:
        if self.match_criteria in (QueryMatchCriteria.QUERY_MATCH_REGEX_MATCH,
                                   QueryMatchCriteria.QUERY_MATCH_REGEX_DOES_NOT_MATCH):
            _check_regexes(self.match_str)
        return self


class HostHdrMatch(Struct):
    match_criteria: HdrMatchCriteria
    value: list[str] = Field(default_factory=list)
    match_case: MatchCase = MatchCase.INSENSITIVE


class HdrMatch(Struct):
    hdr: Annotated[str, Field(min_length=1)]
    match_criteria: HdrMatchCriteria
    value: list[str] = Field(default_factory=list)
    match_case: MatchCase = MatchCase.INSENSITIVE


class CookieMatch(Struct):
    name: Annotated[str, Field(min_length=1)]
    match_criteria: HdrMatchCriteria
    value: str | None = None
    match_case: MatchCase = MatchCase.INSENSITIVE


class RedirectProtocol(str, Enum):
    HTTP = "HTTP"
    HTTPS = "HTTPS"


class ProtocolMatch(Struct):
    match_criteria: MatchOperation = MatchOperation.IS_IN
    protocols: RedirectProtocol


class MethodMatch(Struct):
    match_criteria: MatchOperation = MatchOperation.IS_IN
    methods: Annotated[list[HttpMethod], Field(min_length=1)]


class IpAddrMatch(Struct):
    match_criteria: MatchOperation = MatchOperation.IS_IN
    addrs: list[IpAddr] = Field(default_factory=list)
    prefixes: list[IpAddrPrefix] = Field(default_factory=list)
    ranges: list[IpAddrRange] = Field(default_factory=list)


class PortMatch(Struct):
    match_criteria: MatchOperation = MatchOperation.IS_IN
    ports: Annotated[list[Port], Field(min_length=1)]


class MatchTarget(Struct):
    path: PathMatch | None = None
    host_hdr: HostHdrMatch | None = None
    hdrs: list[HdrMatch] = Field(default_factory=list)
    method: MethodMatch | None = None
    client_ip: IpAddrMatch | None = None
    vs_port: PortMatch | None = None
    query: QueryMatch | None = None
    cookie: CookieMatch | None = None
    protocol: ProtocolMatch | None = None


class HttpStatusRange(Struct):
    begin: Annotated[int, Field(ge=100, le=599)]
    end: Annotated[int, Field(ge=100, le=599)]


class HttpStatusMatch(Struct):
    match_criteria: MatchOperation = MatchOperation.IS_IN
    status_codes: list[Annotated[int, Field(ge=100, le=599)]] = Field(default_factory=list)
    ranges: list[HttpStatusRange] = Field(default_factory=list)


class ResponseMatchTarget(MatchTarget):
    """Request criteria are evaluated against the request as the client sent it."""

    status: HttpStatusMatch | None = None
    rsp_hdrs: list[HdrMatch] = Field(default_factory=list)


class SwitchingActionType(str, Enum):
    HTTP_SWITCHING_SELECT_POOL = "HTTP_SWITCHING_SELECT_POOL"
    HTTP_SWITCHING_SELECT_POOLGROUP = "HTTP_SWITCHING_SELECT_POOLGROUP"
    HTTP_SWITCHING_SELECT_LOCAL = "HTTP_SWITCHING_SELECT_LOCAL"


class LocalResponseStatus(str, Enum):
    HTTP_LOCAL_RESPONSE_STATUS_CODE_200 = "HTTP_LOCAL_RESPONSE_STATUS_CODE_200"
    HTTP_LOCAL_RESPONSE_STATUS_CODE_204 = "HTTP_LOCAL_RESPONSE_STATUS_CODE_204"
    HTTP_LOCAL_RESPONSE_STATUS_CODE_403 = "HTTP_LOCAL_RESPONSE_STATUS_CODE_403"
    HTTP_LOCAL_RESPONSE_STATUS_CODE_404 = "HTTP_LOCAL_RESPONSE_STATUS_CODE_404"
    HTTP_LOCAL_RESPONSE_STATUS_CODE_429 = "HTTP_LOCAL_RESPONSE_STATUS_CODE_429"
    HTTP_LOCAL_RESPONSE_STATUS_CODE_501 = "HTTP_LOCAL_RESPONSE_STATUS_CODE_501"


class SwitchingAction(Struct):
    action: SwitchingActionType
    pool_ref: str | None = None
    pool_group_ref: str | None = None
    status_code: LocalResponseStatus | None = None

    @pydantic.model_validator(mode="after")
    def _target(self) -> SwitchingAction:
        if self.action == SwitchingActionType.HTTP_SWITCHING_SELECT_POOL and not self.pool_ref:
            raise ValueError("pool_ref is required with HTTP_SWITCHING_SELECT_POOL")
        if (self.action == SwitchingActionType.HTTP_SWITCHING_SELECT_POOLGROUP
                and not self.pool_group_ref):
            raise ValueError("pool_group_ref is required with HTTP_SWITCHING_SELECT_POOLGROUP")
        if self.action == SwitchingActionType.HTTP_SWITCHING_SELECT_LOCAL and not self.status_code:
            raise ValueError("status_code is required with HTTP_SWITCHING_SELECT_LOCAL")
        return self


class RedirectStatusCode(str, Enum):
    HTTP_REDIRECT_STATUS_CODE_301 = "HTTP_REDIRECT_STATUS_CODE_301"
    HTTP_REDIRECT_STATUS_CODE_302 = "HTTP_REDIRECT_STATUS_CODE_302"
    HTTP_REDIRECT_STATUS_CODE_307 = "HTTP_REDIRECT_STATUS_CODE_307"
    HTTP_REDIRECT_STATUS_CODE_308 = "HTTP_REDIRECT_STATUS_CODE_308"


class UriParamType(str, Enum):
    URI_PARAM_TYPE_TOKENIZED = "URI_PARAM_TYPE_TOKENIZED"


class UriTokenType(str, Enum):
    URI_TOKEN_TYPE_HOST = "URI_TOKEN_TYPE_HOST"
    URI_TOKEN_TYPE_PATH = "URI_TOKEN_TYPE_PATH"
    URI_TOKEN_TYPE_STRING = "URI_TOKEN_TYPE_STRING"
    URI_TOKEN_TYPE_STRING_GROUP = "URI_TOKEN_TYPE_STRING_GROUP"
    URI_TOKEN_TYPE_REGEX = "URI_TOKEN_TYPE_REGEX"
    URI_TOKEN_TYPE_REGEX_QUERY = "URI_TOKEN_TYPE_REGEX_QUERY"


class UriParamToken(Struct):
    type: UriTokenType
    str_value: str | None = None
    start_index: Annotated[int, Field(ge=0, le=65535)] | None = None
    end_index: Annotated[int, Field(ge=0, le=65535)] | None = None
    """65535 means the last one."""


class UriParam(Struct):
    """A host or path built from tokens: constants and pieces of the request's own host
    (labels, by index) or path (segments, by index)."""

    type: UriParamType = UriParamType.URI_PARAM_TYPE_TOKENIZED
    tokens: Annotated[list[UriParamToken], Field(min_length=1)]


class UriParamQuery(Struct):
    keep_query: bool = True
    add_string: str | None = None


class RewriteUrlAction(Struct):
    host_hdr: UriParam | str | None = None
    path: UriParam | str | None = None
    query: UriParamQuery | None = None


class RedirectAction(Struct):
    protocol: RedirectProtocol = RedirectProtocol.HTTPS
    host: UriParam | str | None = None
    """Unset: the request's host. A plain string is accepted as well as Avi's tokens."""
    port: Port | None = None
    path: UriParam | str | None = None
    """Unset: the request's path."""
    keep_query: bool = True
    add_string: str | None = None
    status_code: RedirectStatusCode = RedirectStatusCode.HTTP_REDIRECT_STATUS_CODE_302


class HdrActionType(str, Enum):
    HTTP_ADD_HDR = "HTTP_ADD_HDR"
    HTTP_REMOVE_HDR = "HTTP_REMOVE_HDR"
    HTTP_REPLACE_HDR = "HTTP_REPLACE_HDR"


class HdrValue(Struct):
    val: str


class HttpHdr(Struct):
    name: Annotated[str, Field(min_length=1, pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")]
    value: HdrValue | None = None


class HdrAction(Struct):
    action: HdrActionType
    hdr: HttpHdr


class _Rule(Struct):
    name: Annotated[str, Field(min_length=1)]
    index: Annotated[int, Field(ge=0)]
    enable: bool = True
    match: MatchTarget | None = None
    log: bool = False


class RateLimiter(Struct):
    count: Annotated[int, Field(ge=1, le=1_000_000_000)]
    period: Annotated[int, Field(ge=1, le=1_000_000_000)]
    """Seconds over which `count` requests are let through."""
    burst_sz: Annotated[int, Field(ge=0, le=1_000_000_000)] = 0
    """Requests let through at once; no effect when below `count`."""
    name: str | None = None


class RateLimiterActionType(str, Enum):
    RL_ACTION_NONE = "RL_ACTION_NONE"
    RL_ACTION_DROP_CONN = "RL_ACTION_DROP_CONN"
    RL_ACTION_RESET_CONN = "RL_ACTION_RESET_CONN"
    RL_ACTION_CLOSE_CONN = "RL_ACTION_CLOSE_CONN"
    RL_ACTION_LOCAL_RSP = "RL_ACTION_LOCAL_RSP"
    RL_ACTION_REDIRECT = "RL_ACTION_REDIRECT"


class RateLimiterAction(Struct):
    type: RateLimiterActionType = RateLimiterActionType.RL_ACTION_LOCAL_RSP
    status_code: LocalResponseStatus = LocalResponseStatus.HTTP_LOCAL_RESPONSE_STATUS_CODE_429
    redirect: RedirectAction | None = None

    @pydantic.model_validator(mode="after")
    def _redirect_given(self) -> RateLimiterAction:
        if self.type == RateLimiterActionType.RL_ACTION_REDIRECT and self.redirect is None:
            raise ValueError("redirect is required with RL_ACTION_REDIRECT")
        return self


class HttpSecurityActionRateProfile(Struct):
    """Avi's rate limit of an HTTP security rule (HTTP_SECURITY_ACTION_RATE_LIMIT)."""

    rate_limiter: RateLimiter
    action: RateLimiterAction
    per_client_ip: bool = False
    per_uri_path: bool = False


class HttpRateLimitAction(Struct):
    """Rate limit of a request rule: requests matching the rule beyond the rate get `action`.

    Keyed per client IP by default (Vantage addition; Avi rate-limits in security rules)."""

    rate_limiter: RateLimiter
    action: RateLimiterAction = Field(default_factory=RateLimiterAction)
    per_client_ip: bool = True
    per_uri_path: bool = False


class HttpRequestRule(_Rule):
    switching_action: SwitchingAction | None = None
    redirect_action: RedirectAction | None = None
    hdr_action: list[HdrAction] = Field(default_factory=list)
    rewrite_url_action: RewriteUrlAction | None = None
    rate_limit_action: HttpRateLimitAction | None = None

    @pydantic.model_validator(mode="after")
    def _one_terminal_action(self) -> HttpRequestRule:
        if self.switching_action and self.redirect_action:
            raise ValueError("a rule takes switching_action or redirect_action, not both")
        return self


class HttpResponseRule(_Rule):
    match: ResponseMatchTarget | None = None
    hdr_action: list[HdrAction] = Field(default_factory=list)


class SecurityActionType(str, Enum):
    HTTP_SECURITY_ACTION_ALLOW = "HTTP_SECURITY_ACTION_ALLOW"
    HTTP_SECURITY_ACTION_CLOSE_CONN = "HTTP_SECURITY_ACTION_CLOSE_CONN"
    HTTP_SECURITY_ACTION_SEND_RESPONSE = "HTTP_SECURITY_ACTION_SEND_RESPONSE"
    HTTP_SECURITY_ACTION_REDIRECT_TO_HTTPS = "HTTP_SECURITY_ACTION_REDIRECT_TO_HTTPS"
    HTTP_SECURITY_ACTION_RATE_LIMIT = "HTTP_SECURITY_ACTION_RATE_LIMIT"


class SecurityAction(Struct):
    action: SecurityActionType
    status_code: LocalResponseStatus | None = None
    https_port: Port | None = None
    rate_profile: HttpSecurityActionRateProfile | None = None

    @pydantic.model_validator(mode="after")
    def _rate_profile_given(self) -> SecurityAction:
        if (self.action == SecurityActionType.HTTP_SECURITY_ACTION_RATE_LIMIT
                and self.rate_profile is None):
            raise ValueError("rate_profile is required with HTTP_SECURITY_ACTION_RATE_LIMIT")
        return self


class HttpSecurityRule(_Rule):
    action: SecurityAction


def _unique(rules: list[_Rule]) -> list[_Rule]:
    for attr in ("name", "index"):
        seen = set()
        for i, rule in enumerate(rules):
            value = getattr(rule, attr)
            if value in seen:
                raise ValueError(f"rule {i}: {attr} {value!r} is used by another rule")
            seen.add(value)
    return rules


class HttpRequestPolicy(Struct):
    rules: list[HttpRequestRule] = Field(default_factory=list)
    _check = pydantic.field_validator("rules")(classmethod(lambda cls, v: _unique(v)))


class HttpResponsePolicy(Struct):
    rules: list[HttpResponseRule] = Field(default_factory=list)
    _check = pydantic.field_validator("rules")(classmethod(lambda cls, v: _unique(v)))


class HttpSecurityPolicy(Struct):
    rules: list[HttpSecurityRule] = Field(default_factory=list)
    _check = pydantic.field_validator("rules")(classmethod(lambda cls, v: _unique(v)))


class HttpPolicySet(VantageObject):
    kind: ClassVar[str] = "httppolicyset"
    nested_ref_fields: ClassVar[dict[str, str]] = {
        "http_request_policy.rules[].switching_action.pool_ref": "pool",
        "http_request_policy.rules[].switching_action.pool_group_ref": "poolgroup",
    }

    http_request_policy: HttpRequestPolicy | None = None
    http_response_policy: HttpResponsePolicy | None = None
    http_security_policy: HttpSecurityPolicy | None = None
    is_internal_policy: bool = False
