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
    "409": "a conflict: no capacity, a duplicate",
    "413": "the body is too large",
    "422": "well formed, but not valid for this operation",
}


def _success(route: Any) -> dict[str, Any]:
    if route.status == 204:
        return {"description": "done; no content"}
    if route.paged is None:
        return {"description": "created" if route.status == 201 else "OK"}
    return {"description": "one page of the list", "content": {"application/json": {"schema": {
        "type": "object", "required": [route.paged, "total", "limit", "offset", "next"],
        "properties": {
            route.paged: {"type": "array", "items": {"type": "object"}},
            "total": {"type": "integer", "minimum": 0, "description": "items in the whole list"},
            "limit": {"type": "integer"}, "offset": {"type": "integer"},
            "next": {"type": ["string", "null"],
                     "description": "the next page's URL; null on the last page"},
        }}}}}


def document(routes: Any) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
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
