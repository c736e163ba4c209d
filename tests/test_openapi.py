"""/openapi.json: a valid OpenAPI document that matches the routes served."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from gateway.errors import GatewayError

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


async def document(client: TestClient[Any, Any]) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status == 200
    return dict(await response.json())


async def test_the_document_is_valid_openapi(gateway: TestClient[Any, Any]) -> None:
    validate(await document(gateway))


async def test_the_document_and_the_routes_agree(gateway: TestClient[Any, Any]) -> None:
    spec = await document(gateway)
    described = {
        (path, method.upper())
        for path, operations in spec["paths"].items()
        for method in operations
        if method in HTTP_METHODS
    }
    served = {
        (route.resource.canonical, route.method)
        for route in gateway.server.app.router.routes()  # type: ignore[union-attr]
        if route.resource is not None
    }
    assert described == served


def all_subclasses(cls: type) -> set[type]:
    return {cls}.union(*(all_subclasses(c) for c in cls.__subclasses__()))


async def test_every_error_code_is_described(gateway: TestClient[Any, Any]) -> None:
    spec = await document(gateway)
    described = set(
        spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
    )
    assert {cls.code for cls in all_subclasses(GatewayError)} == described
