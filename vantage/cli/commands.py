"""`vantage <kind> list|show|create|set|delete`: the same five commands for every kind,
specialised by the kind's `KindSpec`."""
from __future__ import annotations

import argparse
import json
from typing import Any

from cliff import columns, command, lister, show

from vantage.cli.fields import deep_merge, parse_fields, parse_json_argument
from vantage.cli.kinds import KINDS, KindSpec
from vantage.client import ClientError, Unauthorized

#: fields the controller owns; shown first by `show`, never sent back by `set` as changes
_FIRST = ("uuid", "name", "url", "tenant_ref", "_last_modified")


class FieldColumn(columns.FormattableColumn[Any]):
    """A value that reads well in a table but stays raw JSON in json/yaml output."""

    def __init__(self, raw: Any, display: Any) -> None:
        super().__init__(raw)
        self._display = display

    def human_readable(self) -> str:
        value = self._display
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
            return ", ".join(str(v) for v in value)
        if isinstance(value, (dict, list)):
            return json.dumps(value, sort_keys=True)
        return str(value)


def ordered_fields(objs: list[dict[str, Any]]) -> tuple[str, ...]:
    keys: set[str] = set()
    for obj in objs:
        keys.update(obj)
    return tuple(k for k in _FIRST if k in keys) + tuple(sorted(keys - set(_FIRST)))


def _one(spec: KindSpec, obj: dict[str, Any]) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    cols = ordered_fields([obj])
    return cols, tuple(FieldColumn(obj.get(c), spec.display(c, obj)) for c in cols)


def _add_body_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--description", metavar="TEXT")
    parser.add_argument("--field", action="append", default=[], metavar="KEY=VALUE",
                        help="Set any field; VALUE is JSON when it parses as JSON. Dotted keys "
                             "set nested fields (http_monitor.http_request='GET /'). Repeatable.")
    parser.add_argument("--json", metavar="JSON|@FILE",
                        help="Fields as a JSON object (or @file.json); options and --field "
                             "are applied on top.")


def _body_from_arguments(spec: KindSpec, args: argparse.Namespace,
                         creating: bool) -> dict[str, Any]:
    body: dict[str, Any] = parse_json_argument(args.json) if args.json else {}
    body = deep_merge(body, parse_fields(args.field))
    body = deep_merge(body, spec.body(args, creating))
    if args.description is not None:
        body["description"] = args.description
    return body


class KindCommand:
    """Mixin: the kind's spec and the app's client."""

    spec: KindSpec

    @property
    def kind(self) -> str:
        return self.spec.kind

    def client(self) -> Any:
        return self.app.client()  # type: ignore[attr-defined]

    def run(self, parsed_args: argparse.Namespace) -> int:
        try:
            return super().run(parsed_args)  # type: ignore[misc]
        except Unauthorized as exc:
            client = self.app.client()  # type: ignore[attr-defined]
            if client.token:
                exc.message += "; run 'vantage login' to get a new token"
            raise


class ListCommand(KindCommand, lister.Lister):
    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--name", metavar="NAME", help="Only the object with this name.")
        parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                            help="A query parameter, e.g. refers_to=pool:<uuid> or "
                                 "name.icontains=web (repeatable).")
        parser.add_argument("--limit", type=int, metavar="N", help="At most N objects.")
        parser.add_argument("--long", action="store_true", help="Every field as a column.")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple[tuple[str, ...], list[Any]]:
        params: dict[str, Any] = {"include_name": True}
        for item in args.filter:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ClientError(f"--filter {item!r}: expected KEY=VALUE")
            params[key] = value
        if args.name:
            params["name"] = args.name
        if args.limit is not None and args.limit < 1:
            raise ClientError("--limit must be at least 1")
        objs = list(self.client().list(self.kind, limit=args.limit, **params))
        cols = ordered_fields(objs) if args.long else self.spec.columns
        rows = [tuple(FieldColumn(o.get(c), self.spec.display(c, o)) for c in cols)
                for o in objs]
        return cols, rows


class ShowCommand(KindCommand, show.ShowOne):
    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("name_or_uuid", metavar="NAME|UUID")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        return _one(self.spec, self.client().find(self.kind, args.name_or_uuid,
                                                  include_name=True))


class CreateCommand(KindCommand, show.ShowOne):
    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        self.spec.add_arguments(parser, creating=True)
        _add_body_arguments(parser)
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        client = self.client()
        args.name_or_uuid = args.name
        body = _body_from_arguments(self.spec, args, creating=True)
        body["name"] = args.name
        self.spec.prepare(client, args, body, None)
        created = client.create(self.kind, body)
        return _one(self.spec, client.get(self.kind, created["uuid"], include_name=True))


class SetCommand(KindCommand, show.ShowOne):
    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("name_or_uuid", metavar="NAME|UUID")
        parser.add_argument("--new-name", metavar="NAME", help="Rename it.")
        self.spec.add_arguments(parser, creating=False)
        _add_body_arguments(parser)
        parser.add_argument("--unset", action="append", default=[], metavar="FIELD",
                            help="Remove a top-level field so it takes its default "
                                 "(repeatable).")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        client = self.client()
        changes = _body_from_arguments(self.spec, args, creating=False)
        if args.new_name:
            changes["name"] = args.new_name
        patches = self.spec.patches(args)
        current = client.find(self.kind, args.name_or_uuid)
        self.spec.prepare(client, args, changes, current)
        if not changes and not args.unset and not patches:
            raise ClientError(f"nothing to change for {self.kind} {args.name_or_uuid!r}: give "
                              "options, --field KEY=VALUE, --json or --unset")
        uuid = current["uuid"]
        if changes or args.unset:
            updated = deep_merge(current, changes)
            for field in args.unset:
                if field in ("uuid", "name"):
                    raise ClientError(f"--unset {field}: {field} cannot be removed")
                updated.pop(field, None)
            client.put(self.kind, uuid, updated)
        for patch in patches:
            client.patch(self.kind, uuid, **patch)
        return _one(self.spec, client.get(self.kind, uuid, include_name=True))


class DeleteCommand(KindCommand, command.Command):
    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("names", nargs="+", metavar="NAME|UUID")
        return parser

    def take_action(self, args: argparse.Namespace) -> int:
        client = self.client()
        for name in args.names:
            obj = client.find(self.kind, name)
            client.delete(self.kind, obj["uuid"])
        return 0


_ACTIONS: dict[str, tuple[type, str]] = {
    "list": (ListCommand, "List {kind} objects."),
    "show": (ShowCommand, "Show one {kind} by name or UUID."),
    "create": (CreateCommand, "Create a {kind}."),
    "set": (SetCommand, "Change a {kind} (read, change, write back with its _last_modified)."),
    "delete": (DeleteCommand, "Delete {kind} objects by name or UUID."),
}


def kind_commands() -> dict[str, type]:
    """`"<kind> <action>"` → command class, for every kind and action."""
    out: dict[str, type] = {}
    for kind, spec in KINDS.items():
        for action, (base, doc) in _ACTIONS.items():
            cls_name = f"{kind.title()}{action.title()}"
            out[f"{kind} {action}"] = type(cls_name, (base,), {
                "spec": spec, "__doc__": doc.format(kind=kind)})
    return out
