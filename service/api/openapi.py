"""The published OpenAPI document, made to say exactly what the server does.

FastAPI's generated schema is close but not exact for this service, and schemathesis (run in the
test suite against a real server) holds the server to the schema. What is corrected here:

- every error answer has the project's error shape (`ErrorResponse`), 422 included (FastAPI
  documents its own `HTTPValidationError`, which the error handlers never send);
- 503 (`database_unavailable`, `overloaded`, with `Retry-After`) is documented on every route
  that needs the database or the inference queue;
- multipart form fields are either sent or left out: FastAPI's `anyOf [..., null]` for an optional
  field would invite a client to send the text "null";
- constraints the handlers enforce are stated: at least one image, and verify's "image_b or
  identity_id";
- enroll links to the identity routes (OpenAPI links), so a client (or a stateful fuzzer) can follow
  a new identity's id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
JSON_ERROR = {"application/json": {"schema": ERROR_REF}}
UNAVAILABLE = {
    "description": "The database is unreachable (`database_unavailable`) or the inference queue is full "
    "(`overloaded`); `Retry-After` says when to try again.",
    "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    "content": JSON_ERROR,
}
# Text fields refuse control characters but tab (schemas.printable; it refuses lone surrogates too,
# which a JSON Schema regex cannot name portably);
# a name also holds something other than white space (the handlers strip names).
_CONTROL = r"\x00-\x08\x0a-\x1f\x7f-\x9f"
PRINTABLE = rf"^[^{_CONTROL}]*$"
NOT_BLANK = rf"^[^{_CONTROL}]*[^\s{_CONTROL}][^{_CONTROL}]*$"
# Routes that never touch the database or the inference queue.
NO_DATABASE = {"/health"}
IDENTITY_OPERATIONS = {  # (path under the enroll's prefix, method) -> link name
    ("/identities/{identity_id}", "get"): "GetIdentity",
    ("/identities/{identity_id}", "patch"): "UpdateIdentity",
    ("/identities/{identity_id}", "delete"): "DeleteIdentity",
    ("/identities/{identity_id}/faces", "get"): "ListFaces",
    ("/identities/{identity_id}/faces", "post"): "AddFaces",
    ("/identities/{identity_id}/export", "get"): "ExportIdentity",
    ("/identities/{identity_id}/faces/{face_id}", "delete"): "DeleteFace",
}


def install_openapi(app: FastAPI, *, max_images: int) -> None:
    generate: Callable[[], dict[str, Any]] = app.openapi
    done: list[bool] = []

    def openapi() -> dict[str, Any]:
        schema = generate()
        if not done:
            refine(schema, max_images=max_images)
            done.append(True)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def refine(schema: dict[str, Any], *, max_images: int) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    requests: set[str] = set()
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            for content in operation.get("requestBody", {}).get("content", {}).values():
                requests.add(content["schema"].get("$ref", "#/").rsplit("/", 1)[-1])
            responses = operation.setdefault("responses", {})
            _error_shapes(responses, path)
            if "requestBody" in operation:
                responses.setdefault("408", {"description": "The body took too long to arrive (`request_timeout`)."})
                responses.setdefault("413", {"description": "The request is over the size limit."})
                responses["408"]["content"] = responses["413"]["content"] = JSON_ERROR
            for parameter in operation.get("parameters", []):
                _printable({"properties": {"p": parameter.get("schema", {})}})
            body = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
            if body is not None:
                _form(components, body["schema"], max_images)
            if method == "post" and path.endswith("/enroll"):
                _links(schema, responses, path.removesuffix("/enroll"))
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    _handler_checks(components)
    for name in requests:
        _printable(components[name])


def _handler_checks(components: dict[str, Any]) -> None:
    """What the handlers refuse beyond the models' own validation, stated in the schema."""
    create = components.get("CollectionCreate")
    if create is not None:  # a fixed threshold or a target FPIR, not both
        both = {"target_fpir": {"type": "number"}, "threshold": {"type": "number"}}
        create["not"] = {"required": list(both), "properties": both}
    update = components.get("IdentityUpdate")
    if update is not None:  # something to change; a name is not blank and cannot be removed
        update["minProperties"] = 1
        name = update.get("properties", {}).get("name")
        if name is not None:
            text = next((o for o in name.get("anyOf", []) if o.get("type") == "string"), name)
            rest = {k: v for k, v in name.items() if k != "anyOf"}
            update["properties"]["name"] = {**text, **rest, "pattern": NOT_BLANK}


def _printable(schema: dict[str, Any]) -> None:
    """Every free-text field (a string without a pattern, format or media type) says `printable`."""
    for field in schema.get("properties", {}).values():
        for option in [field, *field.get("anyOf", [])]:
            if option.get("type") == "string" and not {"pattern", "format", "contentMediaType", "enum"} & set(option):
                option["pattern"] = PRINTABLE


def _error_shapes(responses: dict[str, Any], path: str) -> None:
    for status, response in responses.items():
        if status in {"422", "500"} or (status.startswith("4") and "content" not in response):
            response["content"] = JSON_ERROR
    if "422" in responses and responses["422"].get("description") == "Validation Error":
        responses["422"]["description"] = "Invalid request (`invalid_request`)."
    if path not in NO_DATABASE and "503" not in responses:
        responses["503"] = UNAVAILABLE
    responses.setdefault("500", {"description": "Internal error.", "content": JSON_ERROR})


def _resolve(components: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    resolved: dict[str, Any] = components[ref.rsplit("/", 1)[-1]]
    return resolved


def _form(components: dict[str, Any], schema: dict[str, Any], max_images: int) -> None:
    form = _resolve(components, schema)
    properties: dict[str, Any] = form.get("properties", {})
    for name, field in list(properties.items()):
        options = field.get("anyOf")
        if options is not None:
            present = [o for o in options if o.get("type") != "null"]
            if len(present) == 1:  # optional: left out, never "null"
                rest = {k: v for k, v in field.items() if k != "anyOf"}
                properties[name] = {**present[0], **rest}
        if properties[name].get("pattern") == r"\S":
            properties[name]["pattern"] = NOT_BLANK
        if properties[name].get("type") == "array":
            properties[name].update(minItems=1, maxItems=max_images)
    if "image_b" in properties and "identity_id" in properties:
        form["oneOf"] = [{"required": ["image_b"]}, {"required": ["identity_id"]}]


def _links(schema: dict[str, Any], responses: dict[str, Any], prefix: str) -> None:
    created = responses.get("201")
    if created is None:
        return
    links: dict[str, Any] = {}
    for (path, method), name in IDENTITY_OPERATIONS.items():
        target = schema["paths"].get(prefix + path, {}).get(method)
        if target is None or "operationId" not in target:
            continue
        parameters = {"identity_id": "$response.body#/identity/id"}
        if "{face_id}" in path:
            parameters["face_id"] = "$response.body#/accepted/0/face_id"
        if "{collection}" in prefix:
            parameters["collection"] = "$request.path.collection"
        links[name] = {"operationId": target["operationId"], "parameters": parameters}
    created["links"] = links
