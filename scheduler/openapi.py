"""The OpenAPI 3.1 document, built from the API's route table so the two cannot drift."""

from __future__ import annotations

import re
from typing import Any

from scheduler.ids import MAX_ID

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string", "description": "stable, for programs"},
        "message": {"type": "string", "description": "for people"},
    }}},
}
QUERY_DOCS = {
    "from": "start, ISO 8601; without an offset it is local time in time_zone",
    "to": "end (exclusive), ISO 8601",
    "time_zone": "IANA zone of times without an offset (default Europe/Prague)",
    "organisation_id": "limit to one organisation",
    "kind": "organisation kind: region, orp, central, izs, group, other",
    "parent_id": "organisations under this one",
    "format": "csv for a CSV export",
    "limit": "items per page, 1 to 1000 (default 100)",
    "offset": "items to skip (default 0); follow 'next' for the following page",
}
PAGE_QUERY = ("limit", "offset")
# Path parameters that are not ids.
PATH_SCHEMAS: dict[str, Any] = {
    "start": {"type": "string", "description": "an occurrence's local start, ISO 8601",
              "examples": ["2026-12-14T10:00"]},
}
# What any operation may answer besides its success: the API's JSON error each time.
ERROR_STATUSES = {
    "400": "bad input (a parameter, the body, a time, an RRULE)",
    "401": "not signed in (no or a bad token or session)",
    "403": "the role or organisation may not do this",
    "404": "no such thing (or the route does not exist)",
    "405": "the route has no such method",
    "409": "a conflict: no capacity, a duplicate, a booking that kept changing meanwhile",
    "413": "the body is too large",
    "422": "well formed, but not valid for this operation",
}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object schema: these fields always there (of these types), others allowed."""
    return {"type": "object", "required": list(required),
            "properties": {**required, **(optional or {})}}


INT, STR, BOOL, NUM = {"type": "integer"}, {"type": "string"}, {"type": "boolean"}, {"type": "number"}
OPT_INT, OPT_STR = {"type": ["integer", "null"]}, {"type": ["string", "null"]}
MIX = _obj({"hd": INT, "sd": INT, "audio": INT, "mixed": INT})
LINKS = _obj({"host": STR, "guest": STR})
# What the API answers on success, by name (Route.response): the fields a client may
# rely on. tests/scheduler/test_api.py and test_openapi_conformance.py check live answers.
RESPONSES: dict[str, dict[str, Any]] = {
    "Me": _obj({"id": INT, "name": STR, "role": STR, "organisation_id": OPT_INT, "email": STR}),
    "Organisation": _obj({"id": INT, "name": STR, "kind": STR, "code": OPT_STR,
                          "parent_id": OPT_INT, "email": STR}),
    "Node": _obj({"id": INT, "name": STR, "enabled": BOOL, "labels": {"type": "array"},
                  "workers": {"type": "array", "items": _obj({
                      "id": INT, "index": INT, "capacity_units": INT, "enabled": BOOL})}}),
    "NodeRegistered": _obj({"id": INT}),
    "NodeState": _obj({"id": INT, "enabled": BOOL}),
    "Quotas": _obj({"pool_units": INT, "izs_reserve_percent": NUM, "izs_reserve_units": INT,
                    "quotas": {"type": "array", "items": _obj({
                        "organisation_id": INT, "share_percent": NUM, "units": INT})}}),
    "Quota": _obj({"organisation_id": INT, "share_percent": NUM}),
    "Booking": _obj({"id": INT, "uid": STR, "sequence": INT, "organisation_id": INT,
                     "title": STR, "priority": STR, "izs": BOOL, "status": STR,
                     "time_zone": STR, "start": STR, "end": STR,
                     "recurrence": {"type": ["object", "null"]}, "participants": MIX,
                     "units": INT, "room": STR, "join_links": LINKS,
                     "call_units": {"type": "array", "items": INT}},
                    {"occurrences": {"type": "array", "items": _obj({
                        "id": INT, "start": STR, "end": STR, "state": STR})},
                     "displaced_occurrences": {"type": "array"}}),
    "Availability": _obj({"pool_units": INT, "segments": {"type": "array", "items": _obj({
        "start": STR, "end": STR, "free_units": INT})}}),
    "Bridge": _obj({"id": INT, "organisation_id": INT, "name": STR, "room": STR,
                    "participants": MIX, "units": INT, "active": BOOL, "join_links": LINKS}),
    "User": _obj({"id": INT, "name": STR, "role": STR, "organisation_id": OPT_INT,
                  "email": STR}),
    "Token": _obj({"token": STR}),
    "Object": {"type": "object"},
}


def _success(route: Any) -> dict[str, Any]:
    if route.status == 204:
        return {"description": "done; no content"}
    item = {"$ref": f"#/components/schemas/{route.response}"} if route.response \
        else {"type": "object"}
    if route.paged is None:
        answer: dict[str, Any] = {"description": "created" if route.status == 201 else "OK"}
        if route.response:
            answer["content"] = {"application/json": {"schema": item}}
        return answer
    return {"description": "one page of the list", "content": {"application/json": {"schema": {
        "type": "object", "required": [route.paged, "total", "limit", "offset", "next"],
        "properties": {
            route.paged: {"type": "array", "items": item},
            "total": {"type": "integer", "minimum": 0, "description": "items in the whole list"},
            "limit": {"type": "integer"}, "offset": {"type": "integer"},
            "next": {"type": ["string", "null"],
                     "description": "the next page's URL; null on the last page"},
        }}}}}


def document(routes: Any) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA, **RESPONSES}
    for route in routes:
        parameters = [{"name": name, "in": "path", "required": True,
                       "schema": PATH_SCHEMAS.get(name, {"type": "integer", "minimum": 1,
                                                         "maximum": MAX_ID})}
                      for name in re.findall(r"{(\w+)}", route.path)]
        query = route.query + (PAGE_QUERY if route.paged else ())
        parameters += [{"name": name, "in": "query", "required": False,
                        "schema": {"type": "integer", "minimum": 0} if name in PAGE_QUERY
                        else {"type": "string"}, "description": QUERY_DOCS.get(name, "")}
                       for name in query]
        error = {"content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}}
        responses: dict[str, Any] = {str(route.status): _success(route)}
        responses.update({code: {"description": why, **error}
                          for code, why in ERROR_STATUSES.items()})
        operation: dict[str, Any] = {
            "summary": route.summary,
            "description": f"Roles: {route.roles}.",
            "parameters": parameters,
            "responses": responses,
        }
        if route.public:
            operation["security"] = []
        if route.body is not None:
            schema = route.body.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in schema.pop("$defs", {}).items():
                schemas[name] = definition
            schemas[route.body.__name__] = schema
            operation["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}}}}
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "multipoint scheduler API", "version": "1",
                 "description": "Bookings of the central videoconference multipoint. "
                                "See docs/scheduler.md."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "multipoint_session"},
            },
        },
        "security": [{"token": []}, {"session": []}],
    }
