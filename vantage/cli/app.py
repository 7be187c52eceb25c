"""The `vantage` command: a cliff application over the Python client."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import Any

from cliff import app, commandmanager

import vantage
from vantage.cli import config
from vantage.cli.commands import kind_commands
from vantage.cli.login import Login, Logout
from vantage.client import Client


class _ConsoleFormatter(logging.Formatter):
    """Errors read `error: <message>`; everything else is printed as is."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"error: {text}" if record.levelno >= logging.ERROR else text


class VantageApp(app.App):
    NAME = "vantage"
    LOG = logging.getLogger("vantage.cli")

    def __init__(self, **streams: Any) -> None:
        manager = commandmanager.CommandManager("vantage.cli.commands")
        manager.add_command("login", Login)
        manager.add_command("logout", Logout)
        for name, cls in kind_commands().items():
            manager.add_command(name, cls)
        super().__init__(description="Manage a Vantage controller: virtual services, pools, "
                                     "health monitors, profiles, tenants and users.",
                         version=getattr(vantage, "__version__", "0"),
                         command_manager=manager, deferred_help=True, **streams)
        self.settings = config.Settings()
        self._client: Client | None = None

    def build_option_parser(self, description: str | None, version: str | None,
                            argparse_kwargs: dict[str, Any] | None = None
                            ) -> argparse.ArgumentParser:
        # Global options are recognised anywhere on the line, so no abbreviations: a
        # subcommand's `--pass...` must never be taken for `--password`.
        parser = super().build_option_parser(description, version, {"allow_abbrev": False})
        group = parser.add_argument_group("controller")
        group.add_argument("--url", metavar="URL",
                           help="Controller URL, e.g. https://10.0.0.5 (env VANTAGE_URL).")
        group.add_argument("--username", metavar="NAME", help="(env VANTAGE_USERNAME)")
        group.add_argument("--password", metavar="PASSWORD",
                           help="(env VANTAGE_PASSWORD; with a username, logs in with a "
                                "session instead of the stored token)")
        group.add_argument("--token", metavar="TOKEN", help="API token (env VANTAGE_TOKEN).")
        group.add_argument("--tenant", metavar="TENANT",
                           help="Tenant to work in (env VANTAGE_TENANT; default: the user's).")
        group.add_argument("--ca-file", metavar="FILE",
                           help="CA certificate(s) to verify the controller with "
                                "(env VANTAGE_CA_FILE).")
        group.add_argument("--insecure", action="store_true",
                           help="Do not verify the controller's TLS certificate "
                                "(env VANTAGE_INSECURE=1).")
        group.add_argument("--timeout", type=float, metavar="SECONDS",
                           help="Per-request timeout (default 30).")
        return parser

    def configure_logging(self) -> None:
        super().configure_logging()
        for handler in logging.getLogger("").handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is self.stderr:
                handler.setFormatter(_ConsoleFormatter(self.CONSOLE_MESSAGE_FORMAT))
        # Library chatter (connection pools, stevedore) is not for the command's user.
        for name in ("urllib3", "stevedore"):
            logging.getLogger(name).setLevel(logging.ERROR)

    def initialize_app(self, argv: list[str]) -> None:
        stored = config.load_credentials(config.credentials_path())
        self.settings = config.resolve_settings(self.options, os.environ, stored)
        if self.settings.insecure:
            import urllib3
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    def client(self) -> Client:
        if self._client is None:
            self._client = self.settings.client()
        return self._client

    def clean_up(self, cmd: Any, result: int, err: BaseException | None) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                # A password session ends with the command; failing to end it must not
                # change the command's own outcome (the session expires on its own).
                self._client.logout()
            self._client.close()
            self._client = None


def main(argv: list[str] | None = None) -> int:
    return VantageApp().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
