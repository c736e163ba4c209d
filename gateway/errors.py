"""The gateway's errors: one tree, each with a stable code, an HTTP status and
whether the caller may retry.

    GatewayError
    ├── InvalidRequestError          400 invalid_request
    ├── UnauthorizedError            401 unauthorized
    ├── NotFoundError                404 not_found
    ├── MethodNotAllowedError        405 method_not_allowed
    ├── ClientTimeoutError           408 client_timeout
    ├── IdempotencyInProgressError   409 idempotency_in_progress
    ├── PayloadTooLargeError         413 payload_too_large
    ├── UnsupportedMediaTypeError    415 unsupported_media_type
    ├── IdempotencyKeyReusedError    422 idempotency_key_reused
    ├── ClientAbortedError           499 client_aborted (never delivered: the caller left)
    ├── UpstreamError                502 upstream_error
    ├── OverloadedError              503 overloaded
    ├── UpstreamUnavailableError     503 upstream_unavailable
    └── UpstreamTimeoutError         504 upstream_timeout

The request path raises these; one middleware (`api.app.request_middleware`)
turns them into the JSON error body, and the HTTP layer's own refusals take
the same shape (`api.http_protocol`). Foreign exceptions are mapped once,
where they arise: `chert/client.py` for Chert, `api/body.py` for the caller's
body. The caller's side turns an answer back into one of these
(`client.calls.from_answer`).
"""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    # Each class's defaults; an instance may know better (a broken streamed
    # PUT is an upstream_error the caller can safely send again; the HTTP
    # parser's 431 stays 431), so they are instance attributes.
    code: str = "internal_error"
    status: int = 500
    retryable: bool = False
    # The Retry-After an answer carries when the raiser named none: every 503
    # tells the caller when to come back (SPEC). Not a wait for the gateway's
    # own retries, which take only what Chert said.
    default_retry_after: ClassVar[float | None] = None

    def __init__(
        self,
        message: str,
        *,
        chert_code: int | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.chert_code = chert_code
        self.retry_after = retry_after
        # Set on errors a client rebuilt from an answer (client.calls.from_answer).
        self.request_id: str | None = None
        if retryable is not None:
            self.retryable = retryable
        if status is not None:
            self.status = status

    def to_json(self, request_id: str) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "request_id": request_id,
                "retryable": self.retryable,
                "chert_code": self.chert_code,
            }
        }


class InvalidRequestError(GatewayError):
    code = "invalid_request"
    status = 400


class UnauthorizedError(GatewayError):
    code = "unauthorized"
    status = 401


class NotFoundError(GatewayError):
    code = "not_found"
    status = 404


class MethodNotAllowedError(GatewayError):
    code = "method_not_allowed"
    status = 405


class ClientTimeoutError(GatewayError):
    code = "client_timeout"
    status = 408
    retryable = True


class IdempotencyInProgressError(GatewayError):
    code = "idempotency_in_progress"
    status = 409
    retryable = True


class PayloadTooLargeError(GatewayError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaTypeError(GatewayError):
    code = "unsupported_media_type"
    status = 415


class IdempotencyKeyReusedError(GatewayError):
    code = "idempotency_key_reused"
    status = 422


class RateLimitedError(GatewayError):
    """A named caller over its own quota (GATEWAY_CALLER_*); others go on."""

    code = "rate_limited"
    status = 429
    retryable = True
    default_retry_after = 1


class ClientAbortedError(GatewayError):
    """The caller closed the connection mid-body; there is no one to answer."""

    code = "client_aborted"
    status = 499


class UpstreamError(GatewayError):
    code = "upstream_error"
    status = 502


class OverloadedError(GatewayError):
    code = "overloaded"
    status = 503
    retryable = True
    default_retry_after = 1


class UpstreamUnavailableError(GatewayError):
    code = "upstream_unavailable"
    status = 503
    retryable = True
    default_retry_after = 2


class UpstreamTimeoutError(GatewayError):
    code = "upstream_timeout"
    status = 504
    retryable = True


def every_error_class(root: type[GatewayError] = GatewayError) -> list[type[GatewayError]]:
    """The error tree, root first: what the API documents and a client maps back."""
    return [root, *(cls for sub in root.__subclasses__() for cls in every_error_class(sub))]
