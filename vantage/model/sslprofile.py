"""TLS profiles: protocol versions and ciphers a virtual service (or pool) accepts."""
from __future__ import annotations

from enum import Enum
from typing import Annotated, ClassVar

import pydantic
from pydantic import Field

from vantage.model.base import Struct, VantageObject


class SslVersionType(str, Enum):
    SSL_VERSION_TLS1 = "SSL_VERSION_TLS1"
    SSL_VERSION_TLS1_1 = "SSL_VERSION_TLS1_1"
    SSL_VERSION_TLS1_2 = "SSL_VERSION_TLS1_2"
    SSL_VERSION_TLS1_3 = "SSL_VERSION_TLS1_3"


class SslProfileType(str, Enum):
    SSL_PROFILE_TYPE_APPLICATION = "SSL_PROFILE_TYPE_APPLICATION"
    SSL_PROFILE_TYPE_SYSTEM = "SSL_PROFILE_TYPE_SYSTEM"


class SslVersion(Struct):
    type: SslVersionType


class SslProfile(VantageObject):
    kind: ClassVar[str] = "sslprofile"

    type: SslProfileType = SslProfileType.SSL_PROFILE_TYPE_APPLICATION
    accepted_versions: Annotated[list[SslVersion], Field(min_length=1)] = Field(
        default_factory=lambda: [SslVersion(type=SslVersionType.SSL_VERSION_TLS1_2),
                                 SslVersion(type=SslVersionType.SSL_VERSION_TLS1_3)])
    accepted_ciphers: str = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                             "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:"
                             "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
    """OpenSSL cipher list for TLS 1.2 and below."""
    ciphersuites: str = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"
    """TLS 1.3 cipher suites."""
    ec_named_curve: str = "auto"
    prefer_client_cipher_ordering: bool = False
    enable_ssl_session_reuse: bool = True
    ssl_session_timeout: Annotated[int, Field(ge=0, le=86400)] = 86400
    send_close_notify: bool = True

    @pydantic.field_validator("accepted_versions")
    @classmethod
    def _unique_versions(cls, value: list[SslVersion]) -> list[SslVersion]:
        seen = set()
        for i, item in enumerate(value):
            if item.type in seen:
                raise ValueError(f"accepted_versions[{i}]: {item.type} is listed twice")
            seen.add(item.type)
        return value
