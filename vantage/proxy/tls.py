"""TLS for the data plane: server contexts chosen by SNI, and client contexts to servers.

A listener holds one *front* context that carries the profile (versions, ciphers, ALPN,
resumption) and, through its SNI callback, hands each handshake the certificate context of the
virtual service runtime the listener currently serves. So a reload that changes certificates
takes effect on the next handshake without touching the listening socket.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import ssl
from collections.abc import Callable, Sequence

LOG = logging.getLogger("vantage.proxy.tls")

VERSIONS = {"SSL_VERSION_TLS1": ssl.TLSVersion.TLSv1, "SSL_VERSION_TLS1_1": ssl.TLSVersion.TLSv1_1,
            "SSL_VERSION_TLS1_2": ssl.TLSVersion.TLSv1_2,
            "SSL_VERSION_TLS1_3": ssl.TLSVersion.TLSv1_3}


class TlsConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class CertificateSpec:
    name: str
    certificate: str
    key: str
    passphrase: str | None = None
    chain: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class TlsProfile:
    versions: tuple[str, ...] = ("SSL_VERSION_TLS1_2", "SSL_VERSION_TLS1_3")
    ciphers: str = "ECDHE+AESGCM:ECDHE+CHACHA20"
    session_reuse: bool = True
    session_timeout: int = 86400
    alpn: tuple[str, ...] = ("http/1.1",)
    handshake_timeout: float = 10.0


def _memfile(data: str) -> tuple[int, str]:
    """PEM material as a path without writing it to disk (an anonymous memory file)."""
    fd = os.memfd_create("vantage-pem", os.MFD_CLOEXEC)
    os.write(fd, data.encode())
    return fd, f"/proc/self/fd/{fd}"


def _apply_profile(ctx: ssl.SSLContext, profile: TlsProfile) -> None:
    wanted = sorted(VERSIONS[v] for v in profile.versions if v in VERSIONS)
    if not wanted:
        raise TlsConfigError("no supported TLS version accepted")
    ctx.minimum_version, ctx.maximum_version = wanted[0], wanted[-1]
    try:
        ctx.set_ciphers(profile.ciphers)
    except ssl.SSLError:
        raise TlsConfigError(f"accepted_ciphers {profile.ciphers!r} selects no cipher") from None
    if not profile.session_reuse:
        ctx.options |= ssl.OP_NO_TICKET
    if profile.alpn:
        ctx.set_alpn_protocols(list(profile.alpn))


def _names(pem: str) -> tuple[list[str], datetime.datetime]:
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    cert = x509.load_pem_x509_certificate(pem.encode())
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = [n.lower() for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        pass
    if not names:
        names = [str(a.value).lower() for a in cert.subject.get_attributes_for_oid(
            NameOID.COMMON_NAME)]
    return names, cert.not_valid_after_utc


def certificate_context(spec: CertificateSpec, profile: TlsProfile) -> tuple[ssl.SSLContext,
                                                                              list[str]]:
    """A server context holding one certificate; TlsConfigError says what is wrong with it."""
    try:
        names, not_after = _names(spec.certificate)
    except ValueError:
        raise TlsConfigError(f"{spec.name}: the certificate is not PEM X.509") from None
    if not_after < datetime.datetime.now(datetime.UTC):
        raise TlsConfigError(f"{spec.name}: the certificate expired on {not_after:%Y-%m-%d}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_profile(ctx, profile)
    chain = spec.certificate.rstrip() + "\n" + "".join(c.rstrip() + "\n" for c in spec.chain)
    cert_fd, cert_path = _memfile(chain)
    key_fd, key_path = _memfile(spec.key)
    try:
        ctx.load_cert_chain(cert_path, key_path, password=spec.passphrase or None)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in reason.upper():
            reason = "the private key does not belong to the certificate"
        elif "BAD_DECRYPT" in reason.upper() or "DECRYPT" in reason.upper():
            reason = "the private key cannot be decrypted with the given passphrase"
        raise TlsConfigError(f"{spec.name}: {reason}") from None
    except (OSError, TypeError) as exc:
        raise TlsConfigError(f"{spec.name}: cannot load the key: {exc}") from None
    finally:
        os.close(cert_fd)
        os.close(key_fd)
    return ctx, names


class CertificateSet:
    """The certificates of one virtual service, chosen by SNI; the first is the default."""

    def __init__(self, specs: Sequence[CertificateSpec], profile: TlsProfile) -> None:
        if not specs:
            raise TlsConfigError("an SSL service needs at least one certificate "
                                 "(ssl_key_and_certificate_refs)")
        self.profile = profile
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcard: dict[str, ssl.SSLContext] = {}
        self.default: ssl.SSLContext | None = None
        for spec in specs:
            ctx, names = certificate_context(spec, profile)
            if self.default is None:
                self.default = ctx
            for name in names:
                if name.startswith("*."):
                    self.wildcard.setdefault(name[2:], ctx)
                else:
                    self.exact.setdefault(name, ctx)

    def select(self, server_name: str | None) -> ssl.SSLContext:
        if server_name:
            name = server_name.lower()
            ctx = self.exact.get(name)
            if ctx is not None:
                return ctx
            _, _, parent = name.partition(".")
            ctx = self.wildcard.get(parent)
            if ctx is not None:
                return ctx
        return self.default


def front_context(profile: TlsProfile, current: Callable[[], CertificateSet | None]
                  ) -> ssl.SSLContext:
    """The listener's context: the profile, and an SNI callback that swaps in the certificate
    of the virtual service runtime `current()` returns at handshake time. (Failed handshakes
    are reported by vantage.proxy.tlsconn, which drives the connections.)"""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_profile(ctx, profile)

    def on_sni(sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext):
        certs = current()
        if certs is None:
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        sslobj.context = certs.select(server_name)
        return None

    ctx.sni_callback = on_sni
    return ctx


def client_context(*, verify_ca: str | None = None, versions: Sequence[str] = (),
                   ciphers: str | None = None) -> ssl.SSLContext:
    """A context for connections to servers (re-encryption). Without a CA, the server's
    certificate is not verified (servers behind a load balancer often have self-signed ones)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify_ca:
        try:
            ctx.load_verify_locations(cadata=verify_ca)
        except ssl.SSLError as exc:
            raise TlsConfigError(f"the server CA certificate is not valid PEM: {exc}") from None
        ctx.check_hostname = False  # servers are addressed by IP; the chain is what is checked
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if versions:
        wanted = sorted(VERSIONS[v] for v in versions if v in VERSIONS)
        ctx.minimum_version, ctx.maximum_version = wanted[0], wanted[-1]
    if ciphers:
        ctx.set_ciphers(ciphers)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def describe_handshake_error(exc: BaseException) -> str:
    """A person's reading of why a TLS handshake failed."""
    reason = getattr(exc, "reason", None) or ""
    known = {
        "NO_SHARED_CIPHER": "no cipher in common with the client",
        "UNSUPPORTED_PROTOCOL": "the client offered no accepted TLS version",
        "WRONG_VERSION_NUMBER": "not a TLS client hello (plain HTTP to a TLS port?)",
        "HTTP_REQUEST": "plain HTTP sent to a TLS port",
        "VERSION_TOO_LOW": "the client's TLS version is below the accepted ones",
        "UNEXPECTED_EOF_WHILE_READING": "the client closed the connection during the handshake",
        "TLSV1_ALERT_UNKNOWN_CA": "the client does not trust the certificate",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the client rejected the certificate",
        "NO_PROTOCOLS_AVAILABLE": "no TLS version in common with the client",
        "PACKET_LENGTH_TOO_LONG": "not a TLS client hello",
    }
    if reason in known:
        return known[reason]
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return f"{type(exc).__name__}: {exc}"
    return reason or str(exc) or type(exc).__name__
