"""HTTP policy sets: ordered request/response rules (match, then act) a virtual service applies."""
from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, ClassVar

import pydantic
from pydantic import Field

from vantage.model.base import Port, Struct, VantageObject
from vantage.model.network import IpAddrPrefix


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


class PathMatch(Struct):
    match_criteria: StringMatchCriteria
    match_str: Annotated[list[str], Field(min_length=1)]
    match_case: str = "SENSITIVE"

    @pydantic.model_validator(mode="after")
    def _regexes_compile(self) -> PathMatch:
        if self.match_criteria in (StringMatchCriteria.REGEX_MATCH,
                                   StringMatchCriteria.REGEX_DOES_NOT_MATCH):
            for i, pattern in enumerate(self.match_str):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"match_str[{i}]: {pattern!r} is not a valid regular "
                                     f"expression ({exc})") from None
        return self


class HostHdrMatch(Struct):
    match_criteria: HdrMatchCriteria
    value: list[str] = Field(default_factory=list)
    match_case: str = "INSENSITIVE"


class HdrMatch(Struct):
    hdr: Annotated[str, Field(min_length=1)]
    match_criteria: HdrMatchCriteria
    value: list[str] = Field(default_factory=list)
    match_case: str = "INSENSITIVE"


class MethodMatch(Struct):
    match_criteria: MatchOperation = MatchOperation.IS_IN
    methods: Annotated[list[HttpMethod], Field(min_length=1)]


class IpAddrMatch(Struct):
    match_criteria: MatchOperation = MatchOperation.IS_IN
    prefixes: list[IpAddrPrefix] = Field(default_factory=list)


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


class RedirectProtocol(str, Enum):
    HTTP = "HTTP"
    HTTPS = "HTTPS"


class RedirectStatusCode(str, Enum):
    HTTP_REDIRECT_STATUS_CODE_301 = "HTTP_REDIRECT_STATUS_CODE_301"
    HTTP_REDIRECT_STATUS_CODE_302 = "HTTP_REDIRECT_STATUS_CODE_302"
    HTTP_REDIRECT_STATUS_CODE_307 = "HTTP_REDIRECT_STATUS_CODE_307"
    HTTP_REDIRECT_STATUS_CODE_308 = "HTTP_REDIRECT_STATUS_CODE_308"


class RedirectAction(Struct):
    protocol: RedirectProtocol = RedirectProtocol.HTTPS
    host: str | None = None
    port: Port | None = None
    path: str | None = None
    keep_query: bool = True
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


class HttpRequestRule(_Rule):
    switching_action: SwitchingAction | None = None
    redirect_action: RedirectAction | None = None
    hdr_action: list[HdrAction] = Field(default_factory=list)

    @pydantic.model_validator(mode="after")
    def _one_terminal_action(self) -> HttpRequestRule:
        if self.switching_action and self.redirect_action:
            raise ValueError("a rule takes switching_action or redirect_action, not both")
        return self


class HttpResponseRule(_Rule):
    hdr_action: list[HdrAction] = Field(default_factory=list)


class SecurityActionType(str, Enum):
    HTTP_SECURITY_ACTION_ALLOW = "HTTP_SECURITY_ACTION_ALLOW"
    HTTP_SECURITY_ACTION_CLOSE_CONN = "HTTP_SECURITY_ACTION_CLOSE_CONN"
    HTTP_SECURITY_ACTION_SEND_RESPONSE = "HTTP_SECURITY_ACTION_SEND_RESPONSE"


class SecurityAction(Struct):
    action: SecurityActionType
    status_code: LocalResponseStatus | None = None


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
