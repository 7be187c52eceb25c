"""The OpenAPI 3.1 document of the REST API, generated from the model's pydantic schemas."""
from __future__ import annotations

import functools
from typing import Any

from pydantic.json_schema import models_json_schema

from vantage.controller.objects import HIDDEN_SECRET_KINDS
from vantage.model.registry import KINDS, SECRET_FIELDS

_ERRORS = {
    "400": "Invalid input: `error` names each bad field (also listed in `details`).",
    "401": "Not logged in, or the session expired.",
    "403": "Not allowed (role privileges, CSRF check, or a read-only shared object).",
    "404": "No such object in this tenant.",
    "409": "Conflicts with other objects (duplicate name, still referenced).",
    "412": "The object changed since the given `_last_modified` / If-Match.",
    "429": "Too many failed logins.",
}


def _error_responses(*codes: str) -> dict[str, Any]:
    return {code: {"description": _ERRORS[code],
                   "content": {"application/json": {
                       "schema": {"$ref": "#/components/schemas/Error"}}}}
            for code in codes}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_HEADERS = [
    {"name": "X-Avi-Tenant", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "Name of the tenant the request acts in (default: the user's)."},
]

_LIST_PARAMS = [
    _query("name", {"type": "string"}, "Only the object with this name."),
    _query("name.icontains", {"type": "string"}, "Objects whose name contains this text."),
    _query("page", {"type": "integer", "minimum": 1}, "Page number, from 1."),
    _query("page_size", {"type": "integer", "minimum": 1, "maximum": 200},
           "Objects per page (at most 200)."),
    _query("fields", {"type": "string"}, "Comma-separated fields to return."),
    _query("include_name", {"type": "boolean"}, "Append #<name> to every reference."),
    _query("sort", {"type": "string", "enum": ["name", "-name", "uuid", "-uuid",
                                               "_last_modified", "-_last_modified"]},
           "Sort order."),
    _query("refers_to", {"type": "string", "pattern": r"^([a-z]+:)?[a-z]+-[0-9a-fA-F-]{36}$"},
           "Objects that refer to <kind>:<uuid>."),
    _query("referred_by", {"type": "string", "pattern": r"^([a-z]+:)?[a-z]+-[0-9a-fA-F-]{36}$"},
           "Objects that <kind>:<uuid> refers to."),
]


def _patch_schema(ref: str) -> dict[str, Any]:
    partial = {"type": "object", "description": f"Fields of {ref.rsplit('/', 1)[-1]}"}
    return {"oneOf": [
        {"type": "object", "properties": {"add": partial}, "required": ["add"],
         "additionalProperties": False},
        {"type": "object", "properties": {"replace": partial}, "required": ["replace"],
         "additionalProperties": False},
        {"type": "object", "properties": {"delete": partial}, "required": ["delete"],
         "additionalProperties": False},
        {"type": "object", "required": ["json_patch"], "additionalProperties": False,
         "properties": {"json_patch": {"type": "array", "items": {
             "type": "object", "required": ["op", "path"],
             "properties": {"op": {"enum": ["add", "remove", "replace", "move", "copy", "test"]},
                            "path": {"type": "string"}, "from": {"type": "string"},
                            "value": {}}}}}},
    ]}


@functools.lru_cache(maxsize=4)
def build_openapi(version: str) -> dict[str, Any]:
    """The document (built once per process and shared: treat it as read-only)."""
    refs, top = models_json_schema([(cls, "validation") for cls in KINDS.values()],
                                   by_alias=True, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    schemas["Error"] = {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string"}, "details": {"type": "array", "items": {"type": "string"}}}}
    paths: dict[str, Any] = {}
    for kind, cls in KINDS.items():
        ref = refs[(cls, "validation")]["$ref"]
        name = ref.rsplit("/", 1)[-1]
        for path in SECRET_FIELDS[kind]:
            if "." in path or path not in schemas[name].get("properties", {}):
                continue
            prop = schemas[name]["properties"][path]
            if kind in HIDDEN_SECRET_KINDS:
                prop["writeOnly"] = True
                prop["description"] = "Write-only: never in an answer."
            else:
                prop["description"] = ("Secret: an answer holds \"<sensitive>\" when it is "
                                       "set, never the value.")
        obj = {"$ref": ref}
        listing = {"type": "object", "required": ["count", "results"], "properties": {
            "count": {"type": "integer"}, "next": {"type": "string"},
            "results": {"type": "array", "items": {"type": "object"}}}}
        uuid_param = {"name": "uuid", "in": "path", "required": True,
                      "schema": {"type": "string"}, "description": f"{kind}-<uuid4>"}
        paths[f"/api/{kind}"] = {
            "get": {"operationId": f"list_{kind}", "tags": [kind],
                    "parameters": _HEADERS + _LIST_PARAMS,
                    "responses": {"200": _json(listing),
                                  **_error_responses("400", "401", "403")}},
            "post": {"operationId": f"create_{kind}", "tags": [kind], "parameters": _HEADERS + [
                {"name": "Slug", "in": "header", "required": False, "schema": {"type": "string"},
                 "description": f"UUID for the new object ({kind}-<uuid4>)."}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": obj}}},
                "responses": {"201": _json(obj, "Created"),
                              **_error_responses("400", "401", "403", "409")}},
        }
        paths[f"/api/{kind}/{{uuid}}"] = {
            "parameters": [uuid_param],
            # `fields=` works here too, but its partial answers do not fit the schema
            "get": {"operationId": f"get_{kind}", "tags": [kind], "parameters": _HEADERS + [
                _LIST_PARAMS[5]],
                "responses": {"200": _json(obj), **_error_responses("401", "403", "404")}},
            "put": {"operationId": f"replace_{kind}", "tags": [kind], "parameters": _HEADERS,
                    "requestBody": {"required": True,
                                    "content": {"application/json": {"schema": obj}}},
                    "responses": {"200": _json(obj), **_error_responses(
                        "400", "401", "403", "404", "409", "412")}},
            "patch": {"operationId": f"patch_{kind}", "tags": [kind], "parameters": _HEADERS,
                      "requestBody": {"required": True, "content": {
                          "application/json": {"schema": _patch_schema(ref)}}},
                      "responses": {"200": _json(obj), **_error_responses(
                          "400", "401", "403", "404", "409", "412")}},
            "delete": {"operationId": f"delete_{kind}", "tags": [kind], "parameters": _HEADERS,
                       "responses": {"204": {"description": "Deleted"}, **_error_responses(
                           "401", "403", "404", "409", "412")}},
        }
    credentials = {"type": "object", "required": ["username"], "additionalProperties": False,
                   "properties": {"username": {"type": "string"},
                                  "password": {"type": "string"}, "token": {"type": "string"}}}
    paths["/login"] = {"post": {
        "operationId": "login", "tags": ["auth"], "security": [],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": credentials},
            "application/x-www-form-urlencoded": {"schema": credentials}}},
        "responses": {"200": _json({"type": "object", "properties": {
            "version": {"type": "object"}, "session_cookie_name": {"type": "string"},
            "user": {"type": "object"}}}, "Logged in; sets the sessionid and csrftoken cookies"),
            **_error_responses("400", "401", "429")}}}
    paths["/logout"] = {"post": {
        "operationId": "logout", "tags": ["auth"],
        "responses": {"200": _json({"type": "object"}), **_error_responses("401", "403")}}}
    token = {"type": "object", "properties": {
        "uuid": {"type": "string"}, "name": {"type": "string"},
        "username": {"type": ["string", "null"]}, "token": {"type": "string"},
        "created": {"type": "string"}, "expires": {"type": ["string", "null"]},
        "last_used": {"type": ["string", "null"]}}}
    paths["/api/usertoken"] = {
        "get": {"operationId": "list_usertokens", "tags": ["auth"],
                "responses": {"200": _json({"type": "object", "properties": {
                    "count": {"type": "integer"}, "results": {"type": "array", "items": token}}}),
                    **_error_responses("401")}},
        "post": {"operationId": "create_usertoken", "tags": ["auth"],
                 "requestBody": {"required": False, "content": {"application/json": {"schema": {
                     "type": "object", "additionalProperties": False, "properties": {
                         "name": {"type": "string", "minLength": 1, "maxLength": 256},
                         "expires_in": {"type": "integer", "minimum": 60,
                                        "maximum": 315360000}}}}}},
                 "responses": {"201": _json(token, "Created; `token` is shown only now"),
                               **_error_responses("400", "401", "403")}}}
    paths["/api/usertoken/{uuid}"] = {"delete": {
        "operationId": "revoke_usertoken", "tags": ["auth"],
        "parameters": [{"name": "uuid", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"204": {"description": "Revoked"},
                      **_error_responses("401", "403", "404")}}}
    paths["/api/auditlog"] = {"get": {
        "operationId": "list_auditlog", "tags": ["audit"],
        "parameters": _HEADERS + [_LIST_PARAMS[2], _LIST_PARAMS[3],
                                  _query("kind", {"type": "string"}, "Object kind."),
                                  _query("obj_uuid", {"type": "string"}, "Object UUID."),
                                  _query("user", {"type": "string"}, "Username."),
                                  _query("action", {"type": "string"}, "CREATE, UPDATE, ...")],
        "responses": {"200": _json({"type": "object", "properties": {
            "count": {"type": "integer"}, "results": {"type": "array",
                                                      "items": {"type": "object"}}}}),
            **_error_responses("400", "401", "403")}}}
    paths["/api/initial-data"] = {"get": {
        "operationId": "initial_data", "tags": ["auth"], "security": [],
        "responses": {"200": _json({"type": "object"})}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Vantage controller API", "version": version,
                 "description": "Avi-compatible REST API of the Vantage controller."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
            },
        },
        "security": [{"session": []}, {"bearer": []}, {"token": []}],
    }
