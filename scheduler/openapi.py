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
}


def document(routes: Any) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    for route in routes:
        parameters = [{"name": name, "in": "path", "required": True,
                       "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}
                      for name in re.findall(r"{(\w+)}", route.path)]
        parameters += [{"name": name, "in": "query", "required": False,
                        "schema": {"type": "string"}, "description": QUERY_DOCS.get(name, "")}
                       for name in route.query]
        operation: dict[str, Any] = {
            "summary": route.summary,
            "description": f"Roles: {route.roles}.",
            "parameters": parameters,
            "responses": {
                "200": {"description": "OK"},
                "default": {"description": "error",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/Error"}}}},
            },
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
