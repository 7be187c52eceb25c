"""`vantage-se-bootstrap`: finds an SE's bootstrap data at boot and writes it as the JSON file
that `vantage-se --bootstrap` reads.

The data comes from where the cloud driver put it: vSphere guestinfo (`guestinfo.vantage.*`
extraConfig, read through VMware Tools), OpenStack cloud-init user data (a `#cloud-config`
document whose `write_files` carries /etc/vantage/bootstrap.json), or a bootstrap file already in
place. Each source is validated the same way, so a broken value is reported at boot naming its
key, not later as a failed TLS handshake.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import email
import grp
import gzip
import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

DEFAULT_OUTPUT = "/etc/vantage/bootstrap.json"
#: where cloud-init keeps the current instance's user data as it was received
DEFAULT_USER_DATA = "/var/lib/cloud/instance/user-data.txt"
#: the vSphere driver's extraConfig prefix (vantage_vsphere.driver.GUESTINFO)
GUESTINFO_PREFIX = "guestinfo.vantage."
GUESTINFO_KEYS = ("controller_url", "se_uuid", "token", "controller_ca")
REQUIRED = ("controller_url", "se_uuid")
SOURCES = ("guestinfo", "cloud-init", "file")
RPCTOOL_TIMEOUT = 10.0


class BootstrapNotFound(Exception):
    """The source holds no bootstrap data (not this cloud, or not handed over yet)."""


class BootstrapError(ValueError):
    """The source holds bootstrap data that is wrong; the message names the field."""


# -- validation ------------------------------------------------------------------------------

def normalize(data: Mapping[str, Any], field: Callable[[str], str]) -> dict[str, Any]:
    """Check bootstrap data and return it in the form `vantage-se` reads (Bootstrap.as_dict of
    vantage.cloud.base). `field(key)` names a key in errors the way its source spells it."""
    if not isinstance(data, Mapping):
        raise BootstrapError(f"{field('')} must be a JSON object, not {type(data).__name__}")
    out = {k: v for k, v in data.items() if v is not None and v != ""}
    missing = [field(k) for k in REQUIRED if k not in out]
    if missing:
        raise BootstrapError(f"bootstrap data lacks {', '.join(missing)}")
    for key in ("controller_url", "se_uuid", "token", "controller_ca"):
        if key in out and not isinstance(out[key], str):
            raise BootstrapError(f"{field(key)} must be a string, not {type(out[key]).__name__}")
    url = urllib.parse.urlsplit(out["controller_url"])
    if url.scheme not in ("https", "http") or not url.hostname:
        raise BootstrapError(f"{field('controller_url')} is {out['controller_url']!r}; it must "
                             "be the controller's https://HOST[:PORT]")
    try:
        url.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError as exc:
        raise BootstrapError(f"{field('controller_url')}: {exc}") from None
    if "controller_ca" in out:
        try:
            ssl.create_default_context().load_verify_locations(cadata=out["controller_ca"])
        except (ssl.SSLError, ValueError) as exc:
            raise BootstrapError(f"{field('controller_ca')} is not a PEM certificate the SE can "
                                 f"verify the controller with ({exc})") from None
    expires = out.get("token_expires")
    if expires is not None and (isinstance(expires, bool) or
                                not isinstance(expires, (int, float))):
        raise BootstrapError(f"{field('token_expires')} must be a number (epoch seconds)")
    return out


# -- vSphere guestinfo -----------------------------------------------------------------------

def rpctool_command(rpctool: str | None = None) -> list[str]:
    """The command that reads one guestinfo key, without the key: `vmware-rpctool` (one
    argument, "info-get guestinfo.X"), else `vmtoolsd --cmd`."""
    if rpctool:
        return [rpctool]
    found = shutil.which("vmware-rpctool")
    if found:
        return [found]
    found = shutil.which("vmtoolsd")
    if found:
        return [found, "--cmd"]
    raise BootstrapNotFound("neither vmware-rpctool nor vmtoolsd is installed (open-vm-tools)")


def _guestinfo_value(command: list[str], key: str) -> tuple[str | None, str]:
    """The value of guestinfo.vantage.<key>, or None with the tool's own words."""
    try:
        done = subprocess.run([*command, f"info-get {GUESTINFO_PREFIX}{key}"],
                              capture_output=True, timeout=RPCTOOL_TIMEOUT,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise BootstrapNotFound(f"{command[0]} did not answer within "
                                f"{RPCTOOL_TIMEOUT:g} s") from None
    except OSError as exc:
        raise BootstrapNotFound(f"cannot run {command[0]}: {exc.strerror}") from None
    said = done.stderr.decode(errors="replace").strip() or \
        done.stdout.decode(errors="replace").strip()
    if done.returncode != 0:
        # "No value found" for a key that is not set; another message outside VMware
        return None, said
    # the tool ends the value with a newline; the value itself never does
    return done.stdout.decode().rstrip("\r\n"), said


def _decode_ca(value: str) -> str:
    if value.lstrip().startswith("-----BEGIN"):
        return value.rstrip("\n") + "\n"  # set by hand as PEM; the tool took its last newline
    try:
        return base64.b64decode("".join(value.split()), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise BootstrapError(f"{GUESTINFO_PREFIX}controller_ca is neither base64 of a PEM "
                             "certificate nor a PEM certificate") from None


def from_guestinfo(rpctool: str | None = None) -> dict[str, Any]:
    """Bootstrap data from the VM's `guestinfo.vantage.*` keys (as the vSphere driver sets
    them: controller_ca is base64 of the PEM)."""
    command = rpctool_command(rpctool)
    data: dict[str, Any] = {}
    said = ""
    for key in GUESTINFO_KEYS:
        value, said_now = _guestinfo_value(command, key)
        if value is None:
            said = said or said_now
            continue
        data[key] = value
    if not any(data.get(k) for k in REQUIRED):
        raise BootstrapNotFound(f"no {GUESTINFO_PREFIX}se_uuid or controller_url in guestinfo"
                                + (f" ({Path(command[0]).name}: {said})" if said else ""))
    if data.get("controller_ca"):
        data["controller_ca"] = _decode_ca(data["controller_ca"])
    return normalize(data, lambda key: f"{GUESTINFO_PREFIX}{key}")


# -- cloud-init user data --------------------------------------------------------------------

def _cloud_config_documents(raw: bytes) -> list[str]:
    """The #cloud-config documents in user data: plain, gzip-compressed, or parts of a MIME
    multipart message (the forms cloud-init accepts)."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise BootstrapError(f"user data is gzip-compressed but does not decompress: {exc}") \
                from None
    head = raw.lstrip()[:200].lower()
    if head.startswith((b"content-type:", b"mime-version:")):
        message = email.message_from_bytes(raw)
        docs = []
        for part in message.walk():
            if part.get_content_type() != "text/cloud-config":
                continue
            payload = part.get_payload(decode=True) or b""
            docs.append(payload.decode(part.get_content_charset() or "utf-8", errors="replace"))
        return docs
    text = raw.decode("utf-8", errors="replace")
    return [text] if text.lstrip().startswith("#cloud-config") else []


def _file_content(entry: Mapping[str, Any], name: str) -> bytes:
    """The bytes cloud-init writes for one write_files entry (its `encoding` values)."""
    content = entry.get("content", "")
    if not isinstance(content, str):
        raise BootstrapError(f"{name}.content must be a string")
    encoding = str(entry.get("encoding") or "text/plain").lower()
    try:
        if encoding in ("b64", "base64"):
            return base64.b64decode(content)
        if encoding in ("gz", "gzip"):
            return gzip.decompress(content.encode("latin-1"))
        if encoding in ("gz+b64", "gz+base64", "gzip+b64", "gzip+base64"):
            return gzip.decompress(base64.b64decode(content))
    except (binascii.Error, OSError, EOFError, UnicodeEncodeError) as exc:
        raise BootstrapError(f"{name}.content does not decode as {encoding}: {exc}") from None
    if encoding != "text/plain":
        raise BootstrapError(f"{name}.encoding {encoding!r} is not one cloud-init writes "
                             "(b64, gz, gz+b64)")
    return content.encode()


def from_user_data(raw: bytes, target: str = DEFAULT_OUTPUT) -> dict[str, Any]:
    """Bootstrap data from cloud-init user data: the `write_files` entry for `target`."""
    docs = _cloud_config_documents(raw)
    if not docs:
        raise BootstrapNotFound("user data holds no #cloud-config document")
    for doc_index, text in enumerate(docs):
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise BootstrapError(f"#cloud-config document {doc_index} is not YAML: {exc}") \
                from None
        files = doc.get("write_files") if isinstance(doc, dict) else None
        if not isinstance(files, list):
            continue
        for i, entry in enumerate(files):
            if not isinstance(entry, dict) or \
                    os.path.normpath(str(entry.get("path", ""))) != os.path.normpath(target):
                continue
            name = f"write_files[{i}] ({target})"
            try:
                data = json.loads(_file_content(entry, name))
            except ValueError as exc:
                raise BootstrapError(f"{name}.content is not JSON: {exc}") from None
            return normalize(data, lambda key, name=name: f"{name} {key}".rstrip())
    raise BootstrapNotFound(f"no write_files entry for {target} in the #cloud-config user data")


def from_file(path: str | Path) -> dict[str, Any]:
    """A bootstrap file already in place (written by cloud-init, or by hand)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise BootstrapNotFound(f"{path} does not exist") from None
    except OSError as exc:
        raise BootstrapNotFound(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BootstrapError(f"{path} is not JSON: {exc}") from None
    return normalize(data, lambda key: f"{path}: {key}".rstrip(": "))


# -- finding and writing ---------------------------------------------------------------------

def find_bootstrap(sources: Sequence[str], *, file_path: str = DEFAULT_OUTPUT,
                   user_data_path: str = DEFAULT_USER_DATA, target: str = DEFAULT_OUTPUT,
                   rpctool: str | None = None) -> tuple[str, dict[str, Any]]:
    """The first source, in order, that holds bootstrap data: (what it was, the data).

    A source that holds none is skipped; one that holds wrong data stops the search with
    BootstrapError (a stale file must not win over a broken fresh value). BootstrapNotFound
    lists why each source had nothing."""
    reasons = []
    for source in sources:
        try:
            if source == "guestinfo":
                return "vSphere guestinfo", from_guestinfo(rpctool)
            if source == "cloud-init":
                try:
                    raw = Path(user_data_path).read_bytes()
                except FileNotFoundError:
                    raise BootstrapNotFound(f"{user_data_path} does not exist") from None
                except OSError as exc:
                    raise BootstrapNotFound(f"cannot read {user_data_path}: "
                                            f"{exc.strerror}") from None
                return f"cloud-init user data {user_data_path}", from_user_data(raw, target)
            if source == "file":
                return f"file {file_path}", from_file(file_path)
            raise ValueError(f"unknown bootstrap source {source!r}; one of {', '.join(SOURCES)}")
        except BootstrapNotFound as exc:
            reasons.append(f"{source}: {exc}")
    raise BootstrapNotFound("; ".join(reasons))


def write_bootstrap(data: Mapping[str, Any], path: str | Path, group: str | None = None) -> None:
    """Write the bootstrap atomically: mode 0600, or 0640 owned by `group` so that the SE
    daemon's own user can read it."""
    path = Path(path)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    gid = grp.getgrnam(group).gr_gid if group else None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640 if gid is not None else 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            if gid is not None:
                os.fchown(f.fileno(), -1, gid)
            json.dump(dict(data), f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="vantage-se-bootstrap",
        description="Find this Service Engine's bootstrap data (vSphere guestinfo, cloud-init "
                    "user data, or a file in place) and write it for `vantage-se --bootstrap`.")
    parser.add_argument("--source", choices=("auto", *SOURCES), default="auto",
                        help="Where to look; auto tries guestinfo, then cloud-init user data, "
                             "then the file already at --output (default: auto).")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, metavar="PATH",
                        help=f"Bootstrap file to write (default: {DEFAULT_OUTPUT}).")
    parser.add_argument("--file", metavar="PATH",
                        help="Bootstrap file the `file` source reads (default: --output).")
    parser.add_argument("--user-data", default=DEFAULT_USER_DATA, metavar="PATH",
                        help=f"cloud-init user data (default: {DEFAULT_USER_DATA}).")
    parser.add_argument("--rpctool", metavar="PATH",
                        help="vmware-rpctool to read guestinfo with (default: vmware-rpctool, "
                             "else vmtoolsd --cmd, from PATH).")
    parser.add_argument("--group", metavar="GROUP",
                        help="Make the file readable by this group (mode 0640), the SE "
                             "daemon's; otherwise mode 0600.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sources = SOURCES if args.source == "auto" else (args.source,)
    prog = "vantage-se-bootstrap"
    try:
        if args.group:
            grp.getgrnam(args.group)
    except KeyError:
        print(f"{prog}: --group {args.group}: no such group", file=sys.stderr)
        return 2
    try:
        origin, data = find_bootstrap(sources, file_path=args.file or args.output,
                                      user_data_path=args.user_data, target=DEFAULT_OUTPUT,
                                      rpctool=args.rpctool)
    except BootstrapNotFound as exc:
        print(f"{prog}: no bootstrap data found: {exc}", file=sys.stderr)
        return 1
    except BootstrapError as exc:
        print(f"{prog}: bootstrap data rejected: {exc}", file=sys.stderr)
        return 2
    try:
        write_bootstrap(data, args.output, args.group)
    except OSError as exc:
        print(f"{prog}: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 3
    print(f"{prog}: SE {data['se_uuid']} (controller {data['controller_url']}): bootstrap "
          f"from {origin} written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
