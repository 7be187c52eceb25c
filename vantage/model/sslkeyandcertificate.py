"""Certificates and their private keys. The key and its passphrase are write-only secrets."""
from __future__ import annotations

from enum import Enum
from typing import ClassVar

import pydantic
from pydantic import Field

from vantage.model.base import Struct, VantageObject

SENSITIVE = "<sensitive>"


class SslCertificateType(str, Enum):
    SSL_CERTIFICATE_TYPE_VIRTUALSERVICE = "SSL_CERTIFICATE_TYPE_VIRTUALSERVICE"
    SSL_CERTIFICATE_TYPE_SYSTEM = "SSL_CERTIFICATE_TYPE_SYSTEM"
    SSL_CERTIFICATE_TYPE_CA = "SSL_CERTIFICATE_TYPE_CA"


class SslKeyFormat(str, Enum):
    SSL_PEM = "SSL_PEM"


class SslCertificateDescription(Struct):
    common_name: str | None = None
    organization: str | None = None
    organization_unit: str | None = None
    country: str | None = None
    distinguished_name: str | None = None


class SslCertificate(Struct):
    certificate: str
    """PEM text of the certificate. The other fields are filled in from it."""
    subject: SslCertificateDescription | None = None
    issuer: SslCertificateDescription | None = None
    not_before: str | None = None
    not_after: str | None = None
    serial_number: str | None = None
    fingerprint: str | None = None
    self_signed: bool | None = None
    subject_alt_names: list[str] = Field(default_factory=list)


class CaCert(Struct):
    ca_ref: str | None = None
    issuer_name: str | None = None


def _describe(name) -> SslCertificateDescription:
    from cryptography.x509.oid import NameOID

    def first(oid):
        values = name.get_attributes_for_oid(oid)
        return str(values[0].value) if values else None

    return SslCertificateDescription(
        common_name=first(NameOID.COMMON_NAME), organization=first(NameOID.ORGANIZATION_NAME),
        organization_unit=first(NameOID.ORGANIZATIONAL_UNIT_NAME),
        country=first(NameOID.COUNTRY_NAME), distinguished_name=name.rfc4514_string())


class SslKeyAndCertificate(VantageObject):
    kind: ClassVar[str] = "sslkeyandcertificate"
    secret_fields: ClassVar[tuple[str, ...]] = ("key", "key_passphrase")
    nested_ref_fields: ClassVar[dict[str, str]] = {"ca_certs[].ca_ref": "sslkeyandcertificate"}

    type: SslCertificateType = SslCertificateType.SSL_CERTIFICATE_TYPE_VIRTUALSERVICE
    format: SslKeyFormat = SslKeyFormat.SSL_PEM
    certificate: SslCertificate
    key: str | None = None
    """PEM private key; write-only (a GET answers "<sensitive>" when one is set)."""
    key_passphrase: str | None = None
    ca_certs: list[CaCert] = Field(default_factory=list)
    enable_ocsp_stapling: bool = False
    status: str = "SSL_CERTIFICATE_FINISHED"

    @pydantic.model_validator(mode="after")
    def _parse_certificate_and_key(self) -> SslKeyAndCertificate:
        """Check that the PEM texts parse and that the key belongs to the certificate, and fill
        in the certificate's description (skipped while the key is the write-only marker)."""
        import hashlib

        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        try:
            cert = x509.load_pem_x509_certificate(self.certificate.certificate.encode())
        except ValueError:
            raise ValueError("certificate.certificate is not a PEM X.509 certificate") from None
        desc = self.certificate
        desc.subject = _describe(cert.subject)
        desc.issuer = _describe(cert.issuer)
        desc.not_before = cert.not_valid_before_utc.isoformat()
        desc.not_after = cert.not_valid_after_utc.isoformat()
        desc.serial_number = format(cert.serial_number, "x")
        desc.fingerprint = "SHA256 " + hashlib.sha256(
            cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        desc.self_signed = cert.subject == cert.issuer
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            desc.subject_alt_names = [str(v) for v in san.value.get_values_for_type(x509.DNSName)]
        except x509.ExtensionNotFound:
            desc.subject_alt_names = []

        if self.key is None or self.key == SENSITIVE:
            if self.type == SslCertificateType.SSL_CERTIFICATE_TYPE_VIRTUALSERVICE and self.key is None:
                raise ValueError("key is required for a SSL_CERTIFICATE_TYPE_VIRTUALSERVICE "
                                 "certificate")
            return self
        passphrase = self.key_passphrase.encode() if self.key_passphrase else None
        try:
            key = serialization.load_pem_private_key(self.key.encode(), password=passphrase)
        except TypeError:
            raise ValueError("key is encrypted: give key_passphrase" if passphrase is None
                             else "key is not encrypted: remove key_passphrase") from None
        except ValueError:
            raise ValueError("key is not a PEM private key, or key_passphrase is wrong") from None
        if key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo) != \
                cert.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo):
            raise ValueError("key does not belong to certificate.certificate")
        return self
