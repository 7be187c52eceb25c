"""Persistence profiles: how a client keeps reaching the same server."""
from __future__ import annotations

from enum import Enum
from typing import Annotated, ClassVar

import pydantic
from pydantic import Field

from vantage.model.base import Struct, VantageObject


class PersistenceType(str, Enum):
    PERSISTENCE_TYPE_CLIENT_IP_ADDRESS = "PERSISTENCE_TYPE_CLIENT_IP_ADDRESS"
    PERSISTENCE_TYPE_CLIENT_IPV6_ADDRESS = "PERSISTENCE_TYPE_CLIENT_IPV6_ADDRESS"
    PERSISTENCE_TYPE_HTTP_COOKIE = "PERSISTENCE_TYPE_HTTP_COOKIE"
    PERSISTENCE_TYPE_APP_COOKIE = "PERSISTENCE_TYPE_APP_COOKIE"
    PERSISTENCE_TYPE_CUSTOM_HTTP_HEADER = "PERSISTENCE_TYPE_CUSTOM_HTTP_HEADER"
    PERSISTENCE_TYPE_TLS = "PERSISTENCE_TYPE_TLS"


class HmDownRecovery(str, Enum):
    HM_DOWN_PICK_NEW_SERVER = "HM_DOWN_PICK_NEW_SERVER"
    HM_DOWN_ABORT_CONNECTION = "HM_DOWN_ABORT_CONNECTION"
    HM_DOWN_CONTINUE_PERSISTENT_SERVER = "HM_DOWN_CONTINUE_PERSISTENT_SERVER"


class IpPersistenceProfile(Struct):
    ip_persistent_timeout: Annotated[int, Field(ge=1, le=720)] = 5
    """Minutes an idle client-IP entry is kept."""
    ip_mask: Annotated[int, Field(ge=0, le=128)] | None = None


class HttpCookiePersistenceProfile(Struct):
    cookie_name: Annotated[str, Field(min_length=1, max_length=64,
                                      pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")] | None = None
    timeout: Annotated[int, Field(ge=0, le=14400)] | None = None
    """Minutes the cookie lasts; unset means a session cookie."""
    always_send_cookie: bool = False
    http_only: bool = False
    is_persistent_cookie: bool = False
    """True: the cookie carries Max-Age = `timeout` and is refused once older; False: a session
    cookie (no Max-Age), honoured for as long as the browser keeps it."""


class AppCookiePersistenceProfile(Struct):
    prst_hdr_name: Annotated[str, Field(min_length=1)]
    timeout: Annotated[int, Field(ge=1, le=720)] = 20


class HdrPersistenceProfile(Struct):
    prst_hdr_name: Annotated[str, Field(min_length=1)]


class ApplicationPersistenceProfile(VantageObject):
    kind: ClassVar[str] = "applicationpersistenceprofile"

    persistence_type: PersistenceType = PersistenceType.PERSISTENCE_TYPE_CLIENT_IP_ADDRESS
    server_hm_down_recovery: HmDownRecovery = HmDownRecovery.HM_DOWN_PICK_NEW_SERVER
    ip_persistence_profile: IpPersistenceProfile | None = None
    http_cookie_persistence_profile: HttpCookiePersistenceProfile | None = None
    app_cookie_persistence_profile: AppCookiePersistenceProfile | None = None
    hdr_persistence_profile: HdrPersistenceProfile | None = None
    is_federated: bool = False

    @pydantic.model_validator(mode="after")
    def _sub_profile(self) -> ApplicationPersistenceProfile:
        kind = self.persistence_type
        if kind in (PersistenceType.PERSISTENCE_TYPE_CLIENT_IP_ADDRESS,
                    PersistenceType.PERSISTENCE_TYPE_CLIENT_IPV6_ADDRESS):
            if self.ip_persistence_profile is None:
                self.ip_persistence_profile = IpPersistenceProfile()
        elif kind == PersistenceType.PERSISTENCE_TYPE_HTTP_COOKIE:
            if self.http_cookie_persistence_profile is None:
                self.http_cookie_persistence_profile = HttpCookiePersistenceProfile()
        elif (kind == PersistenceType.PERSISTENCE_TYPE_APP_COOKIE
              and self.app_cookie_persistence_profile is None):
            raise ValueError("app_cookie_persistence_profile is required with "
                                 "PERSISTENCE_TYPE_APP_COOKIE")
        elif (kind == PersistenceType.PERSISTENCE_TYPE_CUSTOM_HTTP_HEADER
              and self.hdr_persistence_profile is None):
            raise ValueError("hdr_persistence_profile is required with "
                             "PERSISTENCE_TYPE_CUSTOM_HTTP_HEADER")
        return self
