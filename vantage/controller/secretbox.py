"""Encryption of secrets at rest (private keys, passphrases, cloud passwords) with a Fernet key
kept in a file of its own (mode 0600), never in the database."""
from __future__ import annotations

import os

from cryptography.fernet import Fernet, InvalidToken


class SecretKeyError(Exception):
    pass


def load_or_create_key(path: str) -> bytes:
    """The Fernet key in `path`, created with mode 0600 when the file does not exist."""
    try:
        with open(path, "rb") as f:
            key = f.read().strip()
    except FileNotFoundError:
        key = Fernet.generate_key()
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key + b"\n")
        return key
    try:
        Fernet(key)
    except ValueError:
        raise SecretKeyError(f"{path} does not hold a Fernet key (32 url-safe base64 bytes)") \
            from None
    return key


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretKeyError("a stored secret cannot be decrypted with the configured key "
                                 "([secrets] key_file)") from None
