"""/openapi.json: this API described for people and for client generators.

Built here rather than kept as a JSON file, so the parts that must not drift
come from the code itself: the error codes from `gateway.errors`, the media
types from Chert's table (`chert.media`), the id pattern from `intake`, the
default listener from `ops.config`. tests/test_openapi.py checks that the
document and the routes served agree, and tests/test_generated_client.py
uploads a file through a client generated from it.

Binary bodies are described per media type (`format: binary`), which is
what generators turn into a file argument; a `*/*` body is dropped by them.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway import __version__
from gateway.api.intake import ID_RE, MAX_CAPTION_CHARS
from gateway.chert import media
from gateway.errors import every_error_class
from gateway.ops.config import OPTIONS

JSON = "application/json"
ERROR_STATUSES = {
    "400": "the request is invalid (the message says which part)",
    "401": "client tokens are configured and none matched",
    "404": "no such chat or attachment at Chert",
    "408": "the caller stopped sending the body",
    "409": "the same Idempotency-Key is still running; retry after Retry-After",
    "413": "the body or a form part is over its limit",
    "415": "a type Chert does not take, or content that contradicts its type",
    "422": "the Idempotency-Key was used for a different request",
    "429": "this named caller is over its own quota; retry after Retry-After",
    "502": "Chert failed or answered what the gateway cannot use",
    "503": "the gateway is at capacity or draining, or Chert is unavailable",
    "504": "Chert did not answer in time",
}
UPLOAD_ERRORS = (
    "400", "401", "404", "408", "409", "413", "415", "422", "429", "502", "503", "504",
)  # fmt: skip
READ_ERRORS = ("400", "401", "404", "502", "503", "504")


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> dict[str, str]:
    return _ref("schemas", name)


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


BINARY = {"type": "string", "format": "binary"}


def _error_codes() -> list[str]:
    return sorted({cls.code for cls in every_error_class()})


def _answer(description: str, schema: str, *, replayable: bool = False) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Request-ID": _ref("headers", "RequestId")}
    if replayable:
        headers["Idempotent-Replayed"] = _ref("headers", "IdempotentReplayed")
    return {"description": description, "headers": headers, "content": _json_body(_schema(schema))}


def _responses(success: dict[str, Any], errors: tuple[str, ...]) -> dict[str, Any]:
    return {**success, **{status: _ref("responses", f"Error{status}") for status in errors}}


def _file_body(description: str, form_fields: dict[str, Any]) -> dict[str, Any]:
    """The file as the body, under each type Chert takes (or a generic type
    with a name), or as a form with one file part."""
    content: dict[str, Any] = {
        content_type: {"schema": BINARY} for content_type in media.SUPPORTED_TYPES
    }
    content["application/octet-stream"] = {"schema": BINARY}
    content["multipart/form-data"] = {
        "schema": {
            "type": "object",
            "required": ["file"],
            "properties": {"file": {**BINARY, "description": "the file, with a filename"}}
            | form_fields,
        }
    }
    return {"required": True, "description": description, "content": content}


FILE_BODY_TEXT = (
    "The file itself, with its MIME type as Content-Type; with a generic type "
    "(application/octet-stream) or none, the filename's extension or else the file's "
    "first bytes tell the type. With Content-Length it is streamed through; chunked, it "
    "is spooled first. Or a multipart form with one file part."
)
CAPTION = {
    "type": "string",
    "maxLength": MAX_CAPTION_CHARS,
    "description": "a text part before the media part",
}


def _upload_parameters(*, caption: bool) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    if caption:
        parameters += [
            _ref("parameters", "ChatId"),
            {"name": "text", "in": "query", "schema": CAPTION},
        ]
    return [
        *parameters,
        {
            "name": "filename",
            "in": "query",
            "schema": {"type": "string"},
            "description": "the file's name when no Content-Disposition or X-Filename gives it",
        },
        {"name": "X-Filename", "in": "header", "schema": {"type": "string"}},
        {
            "name": "Content-Disposition",
            "in": "header",
            "schema": {"type": "string"},
            "description": "attachment; filename=… (RFC 6266, filename* too)",
        },
        _ref("parameters", "IdempotencyKey"),
        {
            "name": "idempotency_key",
            "in": "query",
            "schema": {"type": "string"},
            "description": "the same as the Idempotency-Key header",
        },
        _ref("parameters", "RequestId"),
    ]


def _send_file(operation_id: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": "Send one file as a message",
        "tags": ["send"],
        "parameters": _upload_parameters(caption=True),
        "requestBody": _file_body(FILE_BODY_TEXT, {"text": CAPTION}),
        "responses": _responses(
            {"201": _answer("uploaded and sent", "SentFile", replayable=True)}, UPLOAD_ERRORS
        ),
    }


def _upload(operation_id: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": "Upload one file to Chert; no message is sent",
        "tags": ["send"],
        "parameters": _upload_parameters(caption=False),
        "requestBody": _file_body(FILE_BODY_TEXT, {}),
        "responses": _responses(
            {"201": _answer("uploaded", "UploadedFile", replayable=True)}, UPLOAD_ERRORS
        ),
    }


def _content(method: str) -> dict[str, Any]:
    headers = {
        "X-Request-ID": _ref("headers", "RequestId"),
        "Content-Length": {"schema": {"type": "integer"}},
        "Content-Disposition": {
            "schema": {"type": "string"},
            "description": "attachment; filename=… with the registered name",
        },
    }
    answer: dict[str, Any] = {
        "description": "the file's bytes, as Chert stores them",
        "headers": headers,
    }
    if method == "get":
        # Chert's own type; an inbound media id may have another.
        types = [*media.SUPPORTED_TYPES, "application/octet-stream"]
        answer["content"] = {t: {"schema": BINARY} for t in types}
    return {
        "operationId": "getAttachmentContent" if method == "get" else "headAttachmentContent",
        "summary": "Download a file" if method == "get" else "A download's headers, no body",
        "tags": ["read"],
        "parameters": [_ref("parameters", "AttachmentId"), _ref("parameters", "RequestId")],
        "responses": _responses({"200": answer}, READ_ERRORS),
    }


def _paths() -> dict[str, Any]:
    return {
        "/v1/chats/{chat_id}/attachments": {
            "post": _send_file("sendFile"),
            "put": _send_file("sendFilePut"),
        },
        "/v1/attachments": {"post": _upload("uploadFile"), "put": _upload("uploadFilePut")},
        "/v1/chats/{chat_id}/messages": {
            "post": {
                "operationId": "sendMessage",
                "summary": "Send a message: Chert's JSON, or a form with files",
                "tags": ["send"],
                "parameters": [
                    _ref("parameters", "ChatId"),
                    _ref("parameters", "IdempotencyKey"),
                    _ref("parameters", "RequestId"),
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {"schema": _schema("SendBody")},
                        "multipart/form-data": {"schema": _schema("MessageForm")},
                    },
                },
                "responses": _responses(
                    {"201": _answer("sent", "SentMessage", replayable=True)}, UPLOAD_ERRORS
                ),
            }
        },
        "/v1/attachments/{attachment_id}": {
            "get": {
                "operationId": "getAttachment",
                "summary": "An attachment's metadata at Chert",
                "tags": ["read"],
                "parameters": [_ref("parameters", "AttachmentId"), _ref("parameters", "RequestId")],
                "responses": _responses(
                    {"200": _answer("the metadata", "AttachmentMetadata")}, READ_ERRORS
                ),
            }
        },
        "/v1/attachments/{attachment_id}/content": {
            "get": _content("get"),
            "head": _content("head"),
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["meta"],
                "security": [],
                "responses": {
                    "200": {"description": "OpenAPI 3.1", "content": _json_body({"type": "object"})}
                },
            }
        },
    }


def _part_schemas() -> dict[str, Any]:
    def part(kind: str, field: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["type", field],
            "properties": {"type": {"type": "string", "enum": [kind]}, field: schema},
        }

    return {
        "TextPart": part("text", "value", {"type": "string"}),
        "MediaPart": part("media", "attachment_id", {"type": "string"}),
        "RichLinkPart": part("rich_link", "url", {"type": "string", "format": "uri"}),
        "Part": {
            "oneOf": [_schema("TextPart"), _schema("MediaPart"), _schema("RichLinkPart")],
            "discriminator": {
                "propertyName": "type",
                "mapping": {
                    "text": "#/components/schemas/TextPart",
                    "media": "#/components/schemas/MediaPart",
                    "rich_link": "#/components/schemas/RichLinkPart",
                },
            },
        },
    }


NULLABLE_STRING = {"type": ["string", "null"]}


def _schemas() -> dict[str, Any]:
    file_properties = {
        "attachment_id": {"type": "string"},
        "filename": {"type": "string"},
        "content_type": {"type": "string", "enum": list(media.SUPPORTED_TYPES)},
        "size_bytes": {"type": "integer"},
        "sha256": {**NULLABLE_STRING, "description": "null when GATEWAY_SHA256 is off"},
    }
    file_required = list(file_properties)
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "request_id", "retryable", "chert_code"],
                    "properties": {
                        "code": {"type": "string", "enum": _error_codes()},
                        "message": {"type": "string"},
                        "request_id": {"type": "string"},
                        "retryable": {"type": "boolean"},
                        "chert_code": {
                            "type": ["integer", "null"],
                            "description": "Chert's numeric code (1002, 3002…) when it gave one",
                        },
                    },
                }
            },
        },
        "Timings": {
            "type": "object",
            "properties": {
                name: {"type": "number"}
                for name in ("create_slot_s", "upload_s", "send_s", "total_s")
            },
        },
        **_part_schemas(),
        "Message": {
            "type": "object",
            "description": "Chert's message, as Chert answered the send",
            "required": ["id", "chat_id", "status"],
            "properties": {
                "id": {"type": "string"},
                "chat_id": {"type": "string"},
                "parts": {"type": "array", "items": _schema("Part")},
                "status": {"type": "string"},
                "direction": {"type": "string"},
                "created_at": NULLABLE_STRING,
                "delivered_at": NULLABLE_STRING,
                "read_at": NULLABLE_STRING,
                "service": {"type": "string"},
            },
        },
        "UploadedFile": {
            "type": "object",
            "required": [*file_required, "expires_at"],
            "properties": {**file_properties, "expires_at": NULLABLE_STRING},
        },
        "SentFile": {
            "type": "object",
            "required": [*file_required, "message", "timings"],
            "properties": {
                **file_properties,
                "message": _schema("Message"),
                "timings": _schema("Timings"),
            },
        },
        "MessageFile": {
            "type": "object",
            "required": [*file_required, "timings"],
            "properties": {**file_properties, "timings": _schema("Timings")},
        },
        "SentMessage": {
            "type": "object",
            "required": ["message", "timings"],
            "properties": {
                "message": _schema("Message"),
                "attachments": {
                    "type": "array",
                    "items": _schema("MessageFile"),
                    "description": "a form's files, in form order",
                },
                "timings": _schema("Timings"),
            },
        },
        "SendBody": {
            "type": "object",
            "description": "Chert's own send shape",
            "required": ["message"],
            "properties": {
                "message": {
                    "type": "object",
                    "required": ["parts"],
                    "properties": {
                        "parts": {"type": "array", "items": _schema("Part"), "minItems": 1},
                        "idempotency_key": {"type": "string"},
                    },
                },
                "parallel_attachments": {"type": "boolean"},
            },
        },
        "MessageForm": {
            "type": "object",
            "properties": {
                "text": {"type": "string"},
                "rich_link": {"type": "string", "format": "uri"},
                "parallel_attachments": {"type": "string", "enum": ["true", "false"]},
                "file": {
                    "type": "array",
                    "items": BINARY,
                    "description": "the files, each with a filename (any field name is taken)",
                },
            },
        },
        "AttachmentMetadata": {
            "type": "object",
            "required": ["attachment"],
            "properties": {
                "attachment": {
                    "type": "object",
                    "properties": {
                        "attachment_id": {"type": "string"},
                        "content_type": {"type": "string"},
                        "size_bytes": {"type": "integer"},
                        "filename": {"type": "string"},
                        "uploaded_at": NULLABLE_STRING,
                        "expires_at": NULLABLE_STRING,
                    },
                }
            },
        },
    }


def _components() -> dict[str, Any]:
    id_schema = {"type": "string", "pattern": ID_RE.pattern}
    return {
        "securitySchemes": {
            "clientToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "one of GATEWAY_CLIENT_TOKENS, when the gateway is given any",
            }
        },
        "parameters": {
            "ChatId": {"name": "chat_id", "in": "path", "required": True, "schema": id_schema},
            "AttachmentId": {
                "name": "attachment_id",
                "in": "path",
                "required": True,
                "schema": id_schema,
            },
            "IdempotencyKey": {
                "name": "Idempotency-Key",
                "in": "header",
                "schema": {"type": "string", "maxLength": 255},
                "description": "passed to Chert; a completed request's repeat replays its answer",
            },
            "RequestId": {
                "name": "X-Request-ID",
                "in": "header",
                "schema": {"type": "string", "maxLength": 128},
            },
        },
        "headers": {
            "RequestId": {
                "schema": {"type": "string"},
                "description": "the caller's X-Request-ID, or a new one: in every log line too",
            },
            "RetryAfter": {"schema": {"type": "integer"}, "description": "seconds to wait"},
            "IdempotentReplayed": {
                "schema": {"type": "string", "enum": ["true"]},
                "description": "the first answer to this Idempotency-Key, replayed",
            },
        },
        "responses": {
            f"Error{status}": {
                "description": description,
                "headers": {
                    "X-Request-ID": _ref("headers", "RequestId"),
                    **(
                        {"Retry-After": _ref("headers", "RetryAfter")}
                        if status in ("409", "429", "503")
                        else {}
                    ),
                },
                "content": _json_body(_schema("Error")),
            }
            for status, description in ERROR_STATUSES.items()
        },
        "schemas": _schemas(),
    }


def _default_api_url() -> str:
    listen = next(o.default for o in OPTIONS if o.env == "GATEWAY_LISTEN")
    return f"http://{listen}"


def build() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chert-gateway",
            "version": __version__,
            "description": (
                "A streaming upload gateway in front of Chert's messaging API. Every answer "
                "carries X-Request-ID; every error is the Error shape."
            ),
        },
        "servers": [{"url": _default_api_url(), "description": "the sidecar's default listener"}],
        "security": [{}, {"clientToken": []}],
        "paths": _paths(),
        "components": _components(),
    }


DOCUMENT = orjson.dumps(build())
