"""The SE bootstrap as cloud-init user data, and back.

An SE server receives a `#cloud-config` document whose `write_files` writes
`/etc/vantage/bootstrap.json` (mode 0600, the JSON of `Bootstrap.as_dict()`); the SE image runs
`vantage-se --bootstrap /etc/vantage/bootstrap.json` when that file exists.
"""
from __future__ import annotations

import base64
import binascii
import gzip
import json
from typing import Any

import yaml

from vantage.cloud.base import Bootstrap

BOOTSTRAP_PATH = "/etc/vantage/bootstrap.json"
HEADER = "#cloud-config"
#: what an SE needs from its bootstrap (vantage.se.agent.load_bootstrap checks the same)
REQUIRED = ("controller_url", "se_uuid", "token")


def user_data(bootstrap: Bootstrap) -> str:
    """The `#cloud-config` document that hands `bootstrap` to the SE."""
    document = {"write_files": [{
        "path": BOOTSTRAP_PATH,
        "owner": "root:root",
        "permissions": "0600",
        "content": json.dumps(bootstrap.as_dict(), sort_keys=True),
    }]}
    return f"{HEADER}\n" + yaml.safe_dump(document, default_flow_style=False, sort_keys=False)


def bootstrap_from_user_data(text: str | bytes) -> dict[str, Any]:
    """The bootstrap dict carried by user data made by `user_data`.

    Takes the document as text, or base64 of it as Nova shows it
    (`OS-EXT-SRV-ATTR:user_data`).

    :raises ValueError: naming what is missing or malformed.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not text.lstrip().startswith(HEADER):
        try:
            text = base64.b64decode(text, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError(f"user data is neither a {HEADER} document nor base64 of one") \
                from None
        if not text.lstrip().startswith(HEADER):
            raise ValueError(f"user data does not start with {HEADER}")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"user data is not valid YAML: {exc}") from None
    files = document.get("write_files") if isinstance(document, dict) else None
    entry = next((f for f in files or () if isinstance(f, dict)
                  and f.get("path") == BOOTSTRAP_PATH), None)
    if entry is None:
        raise ValueError(f"user data writes no {BOOTSTRAP_PATH}")
    content = entry.get("content") or ""
    encoding = str(entry.get("encoding") or "").lower()
    # cloud-init's write_files encodings: b64/base64, gz/gzip and gz+b64
    if "b64" in encoding or "base64" in encoding:
        content = base64.b64decode(content)
    if "gz" in encoding:
        content = gzip.decompress(content)
    if isinstance(content, bytes):
        content = content.decode("utf-8")
    try:
        bootstrap = json.loads(content)
    except ValueError as exc:
        raise ValueError(f"{BOOTSTRAP_PATH} in user data is not JSON: {exc}") from None
    if not isinstance(bootstrap, dict):
        raise ValueError(
            f"{BOOTSTRAP_PATH} in user data is not a JSON object")
    missing = [key for key in REQUIRED if not bootstrap.get(key)]
    if missing:
        raise ValueError(f"{BOOTSTRAP_PATH} in user data lacks {', '.join(missing)}")
    return bootstrap
