"""`vantage login` / `vantage logout`: trade a password for a stored API token, and give it back."""
from __future__ import annotations

import argparse
import getpass
import sys

from cliff import command

from vantage.cli import config
from vantage.client import ApiError, Client, ClientError


class Login(command.Command):
    """Log in with a username and password and store an API token (not the password).

    The token is written to $XDG_CONFIG_HOME/vantage/credentials.json (mode 0600); later
    commands use it until `vantage logout`.
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.epilog = ("The controller, user and TLS options are the global ones: "
                         "vantage --url https://HOST:PORT --username admin [--ca-file FILE | "
                         "--insecure] login. Without --password, VANTAGE_PASSWORD is used or the "
                         "password is asked for.")
        return parser

    def take_action(self, args: argparse.Namespace) -> int:
        settings = self.app.settings
        if not settings.url:
            raise ClientError("no controller URL: vantage --url https://CONTROLLER:PORT login")
        username = settings.username or self._ask("Username: ", secret=False)
        password = settings.password or self._ask(f"Password for {username}: ", secret=True)
        with Client(settings.url, username=username, password=password,
                    tenant=settings.tenant, verify=settings.verify,
                    timeout=settings.timeout) as client:
            client.login()
            issued = client.create_token()
            token = issued.get("token") if isinstance(issued, dict) else None
            if not token:
                raise ClientError("the controller issued no token (no 'token' field in its "
                                  "answer)")
            try:
                client.logout()
            except ClientError:
                pass  # the token is what matters; an unended session expires on its own
        data = {
            "url": client.url, "username": username, "token": token,
            "token_uuid": issued.get("uuid"), "tenant": settings.tenant,
            "ca_file": settings.ca_file, "insecure": settings.insecure,
        }
        path = config.credentials_path()
        config.save_credentials(path, {k: v for k, v in data.items() if v not in (None, "")})
        self.app.stdout.write(f"Logged in to {client.url} as {username}; token stored in "
                              f"{path}\n")
        return 0

    def _ask(self, prompt: str, *, secret: bool) -> str:
        if not sys.stdin.isatty():
            what = "VANTAGE_PASSWORD or --password" if secret else "VANTAGE_USERNAME or --username"
            raise ClientError(f"no {'password' if secret else 'username'} given and no terminal "
                              f"to ask on: set {what}")
        value = getpass.getpass(prompt) if secret else input(prompt)
        if not value:
            raise ClientError("empty input; nothing done")
        return value


class Logout(command.Command):
    """Revoke the stored API token and remove it from this machine."""

    def take_action(self, args: argparse.Namespace) -> int:
        path = config.credentials_path()
        stored = config.load_credentials(path)
        if not stored:
            self.app.stdout.write("Not logged in.\n")
            return 0
        if stored.get("token") and stored.get("url"):
            try:
                with Client(stored["url"], token=stored["token"],
                            verify=False if stored.get("insecure") else
                            stored.get("ca_file") or True) as client:
                    if stored.get("token_uuid"):
                        client.revoke_token(stored["token_uuid"])
            except ApiError as exc:
                if exc.status not in (401, 404):  # already revoked or expired is fine
                    raise
            except ClientError as exc:
                self.app.stderr.write(f"warning: could not revoke the token: {exc}\n")
        config.remove_credentials(path)
        self.app.stdout.write(f"Logged out; removed {path}\n")
        return 0
