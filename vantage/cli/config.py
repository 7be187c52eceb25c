"""Where the CLI finds its controller and credentials: flags, then VANTAGE_* variables, then
the file `vantage login` wrote.

The stored file holds an API token, never a password, and is created with mode 0600 in a
0700 directory (`$XDG_CONFIG_HOME/vantage/`, by default `~/.config/vantage/`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

from vantage.client import Client, ClientError

CREDENTIALS_FILE = "credentials.json"
_TRUE = {"1", "true", "yes", "on"}


def config_dir(environ: Mapping[str, str] | None = None) -> pathlib.Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return pathlib.Path(base) / "vantage"


def credentials_path(environ: Mapping[str, str] | None = None) -> pathlib.Path:
    return config_dir(environ) / CREDENTIALS_FILE


def load_credentials(path: pathlib.Path) -> dict[str, Any]:
    """The stored login, or {} when there is none. A damaged file is an error naming it."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise ClientError(f"{path} is not valid JSON; remove it and run 'vantage login' "
                          "again") from None
    if not isinstance(data, dict):
        raise ClientError(f"{path} does not hold a JSON object; remove it and run "
                          "'vantage login' again")
    return data


def save_credentials(path: pathlib.Path, data: dict[str, Any]) -> None:
    """Write the file readable by its owner only (replacing any previous one atomically)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.chmod(tmp, 0o600)  # in case the file existed with wider permissions
    os.replace(tmp, path)


def remove_credentials(path: pathlib.Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


@dataclasses.dataclass
class Settings:
    """Everything needed to reach and authenticate to the controller."""

    url: str | None = None
    username: str | None = None
    password: str | None = None
    token: str | None = None
    tenant: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    timeout: float = 30.0

    @property
    def verify(self) -> bool | str:
        if self.insecure:
            return False
        return self.ca_file or True

    def client(self, *, require_auth: bool = True) -> Client:
        if not self.url:
            raise ClientError("no controller URL: pass --url, set VANTAGE_URL, or run "
                              "'vantage login --url https://CONTROLLER'")
        if self.ca_file and not os.path.isfile(self.ca_file):
            raise ClientError(f"CA file {self.ca_file!r} does not exist (--ca-file / "
                              "VANTAGE_CA_FILE)")
        use_password = bool(self.username and self.password)
        if require_auth and not use_password and not self.token:
            raise ClientError("not logged in: run 'vantage login', or set VANTAGE_USERNAME and "
                              "VANTAGE_PASSWORD (or VANTAGE_TOKEN)")
        return Client(self.url, username=self.username,
                      password=self.password if use_password else None,
                      token=None if use_password else self.token, tenant=self.tenant,
                      verify=self.verify, timeout=self.timeout)


def resolve_settings(flags: Any, environ: Mapping[str, str], stored: Mapping[str, Any]) -> Settings:
    """Flags win over VANTAGE_* variables, which win over the stored login.

    The stored token is used only for the controller it was issued by.
    """
    def pick(flag: str, env: str, key: str | None = None) -> Any:
        value = getattr(flags, flag, None)
        if value not in (None, ""):
            return value
        if environ.get(env):
            return environ[env]
        return stored.get(key) if key else None

    url = pick("url", "VANTAGE_URL", "url")
    same_controller = bool(stored.get("url")) and _same_url(stored.get("url"), url)
    token = pick("token", "VANTAGE_TOKEN") or (stored.get("token") if same_controller else None)
    insecure = bool(getattr(flags, "insecure", False)) or (
        environ.get("VANTAGE_INSECURE", "").lower() in _TRUE) or (
        same_controller and bool(stored.get("insecure")))
    ca_file = pick("ca_file", "VANTAGE_CA_FILE") or (
        stored.get("ca_file") if same_controller else None)
    timeout = getattr(flags, "timeout", None) or environ.get("VANTAGE_TIMEOUT") or 30.0
    try:
        timeout = float(timeout)
    except ValueError:
        raise ClientError(f"timeout must be a number of seconds, not {timeout!r}") from None
    return Settings(
        url=url,
        username=pick("username", "VANTAGE_USERNAME",
                      "username" if same_controller else None),
        password=pick("password", "VANTAGE_PASSWORD"),
        token=token,
        tenant=pick("tenant", "VANTAGE_TENANT", "tenant" if same_controller else None),
        ca_file=ca_file,
        insecure=insecure,
        timeout=timeout,
    )


def _same_url(a: str | None, b: str | None) -> bool:
    return bool(a and b) and a.rstrip("/") == b.rstrip("/")
