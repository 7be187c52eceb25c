"""SSH to one Linux server: host key verified (known_hosts or a pinned SHA256 fingerprint, never
accepted unseen), connections retried with tenacity, commands and SFTP with clear errors."""
from __future__ import annotations

import base64
import hashlib
import io
import logging
import shlex
import socket
import threading
from pathlib import Path

import paramiko
import tenacity

from vantage.cloud.base import CloudConfigError, CloudError

LOG = logging.getLogger("vantage_linuxserver.ssh")


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as OpenSSH prints it (`ssh-keygen -lf`): SHA256:<base64>."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class HostKeyRejected(CloudError):
    """The server's host key is not the one configured (or none is configured for it)."""


class _VerifyHostKey(paramiko.MissingHostKeyPolicy):
    """Called for a host key that known_hosts does not list: accepted only when it matches the
    pinned fingerprint; otherwise refused with both fingerprints in the message."""

    def __init__(self, pin: str | None) -> None:
        self.pin = pin.rstrip("=") if pin else None

    def missing_host_key(self, client, hostname: str, key: paramiko.PKey) -> None:
        offered = fingerprint(key)
        if self.pin is not None and offered == self.pin:
            return
        if self.pin is not None:
            raise HostKeyRejected(
                f"host key of {hostname} does not match: the server offered {key.get_name()} "
                f"{offered}, host_key_fingerprint pins {self.pin}; if the host was reinstalled, "
                "update the pin (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on the host)")
        raise HostKeyRejected(
            f"host key of {hostname} is unknown: the server offered {key.get_name()} {offered}, "
            "which neither known_hosts nor a host_key_fingerprint lists; verify it on the host "
            "(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) and configure it")


def load_private_key(pem: str | None, path: str | None) -> paramiko.PKey | None:
    """The client key from a PEM/OpenSSH text or a file on the controller host.

    :raises CloudConfigError: naming the field when the key cannot be read.
    """
    if not pem and not path:
        return None
    field = "linuxserver_configuration.ssh_private_key" if pem else \
        "linuxserver_configuration.ssh_key_file"
    try:
        text = pem if pem else Path(path).read_text()
    except OSError as exc:
        raise CloudConfigError(field, f"cannot read {path}: {exc.strerror}") from None
    errors = []
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError) as exc:
            errors.append(f"{cls.__name__}: {exc}")
    raise CloudConfigError(field, "not an unencrypted Ed25519, ECDSA or RSA private key in PEM "
                                  "or OpenSSH format (" + "; ".join(errors) + ")")


class CommandFailed(CloudError):
    def __init__(self, host: str, command: str, status: int, output: str) -> None:
        # callers name the host (and the SE) in their own message
        super().__init__(f"`{command}` exited with status {status}: {output.strip()[-800:]}")
        self.host = host
        self.status = status


class SshHost:
    """One server; the connection is opened on first use and reopened when it drops."""

    def __init__(self, address: str, port: int, *, user: str, key: paramiko.PKey | None,
                 known_hosts: str | None, pin: str | None, attempts: int,
                 timeout: float) -> None:
        self.address, self.port, self.user = address, port, user
        self.key, self.known_hosts, self.pin = key, known_hosts, pin
        self.attempts, self.timeout = attempts, timeout
        self.name = f"{user}@{address}:{port}"
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._root: bool | None = None

    def _connect_once(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if self.known_hosts:
            # paramiko reads known_hosts lines (hashed or not, "[host]:port" for other ports)
            for line in self.known_hosts.splitlines():
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line) if line.strip() and \
                    not line.lstrip().startswith("#") else None
                if entry is not None:
                    for host in entry.hostnames:
                        client.get_host_keys().add(host, entry.key.get_name(), entry.key)
        client.set_missing_host_key_policy(_VerifyHostKey(self.pin))
        try:
            client.connect(self.address, port=self.port, username=self.user, pkey=self.key,
                           timeout=self.timeout, banner_timeout=self.timeout,
                           auth_timeout=self.timeout, allow_agent=False,
                           look_for_keys=False)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyRejected(
                f"host key of {self.address}:{self.port} does not match known_hosts: the server "
                f"offered {exc.key.get_name()} {fingerprint(exc.key)}, known_hosts lists "
                f"{fingerprint(exc.expected_key)}; if the host was reinstalled, update "
                "known_hosts") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise CloudError(f"{self.name}: SSH authentication failed ({exc}); add the "
                             "public half of the configured key to the user's "
                             "~/.ssh/authorized_keys") from None
        except BaseException:
            client.close()
            raise
        return client

    def client(self) -> paramiko.SSHClient:
        with self._lock:
            transport = self._client.get_transport() if self._client else None
            if transport is not None and transport.is_active():
                return self._client
            retrying = tenacity.Retrying(
                stop=tenacity.stop_after_attempt(self.attempts),
                wait=tenacity.wait_exponential(multiplier=0.2, max=5),
                # a wrong host key or refused credentials will not fix themselves
                retry=tenacity.retry_if_exception(
                    lambda exc: isinstance(exc, OSError | paramiko.SSHException)
                    and not isinstance(exc, CloudError)),
                reraise=True)
            try:
                self._client = retrying(self._connect_once)
            except CloudError:
                raise
            except (OSError, paramiko.SSHException) as exc:
                raise CloudError(f"cannot reach {self.name} over SSH after {self.attempts} "
                                 f"attempt(s): {self._reason(exc)}", retryable=True) from None
            return self._client

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError) and exc.errors:
            # one error per address tried; the first says it (connection refused, no route)
            exc = next(iter(exc.errors.values()))
        if isinstance(exc, TimeoutError | socket.timeout):
            return f"no answer within {self.timeout:g} s"
        if isinstance(exc, OSError) and exc.strerror:
            return exc.strerror
        return str(exc) or type(exc).__name__

    def run(self, command: str, *, timeout: float = 120, check: bool = True,
            sudo: bool = False) -> tuple[int, str]:
        """Run `command` with `sh -c`; returns (status, stdout+stderr).

        :raises CommandFailed: on a non-zero status when `check`.
        :raises CloudError: when the host cannot be reached.
        """
        if sudo and not self.is_root():
            command = "sudo -n sh -c " + shlex.quote(command)
        try:
            channel = self.client().get_transport().open_session(timeout=self.timeout)
            channel.set_combine_stderr(True)
            channel.settimeout(timeout)
            channel.exec_command(command)
            with channel.makefile("rb") as stdout:
                output = stdout.read().decode(errors="replace")
            status = channel.recv_exit_status()
            channel.close()
        except (OSError, paramiko.SSHException) as exc:
            self.close()
            raise CloudError(f"{self.name}: `{command}` failed: {exc}", retryable=True) from None
        if check and status != 0:
            raise CommandFailed(self.name, command, status, output)
        return status, output

    def is_root(self) -> bool:
        if self._root is None:
            self._root = self.run("id -u")[1].strip() == "0"
        return self._root

    def sftp(self) -> paramiko.SFTPClient:
        try:
            return self.client().open_sftp()
        except (OSError, paramiko.SSHException) as exc:
            self.close()
            raise CloudError(f"{self.name}: cannot open SFTP: {exc}", retryable=True) from None

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
