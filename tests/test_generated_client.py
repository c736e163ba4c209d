"""A client generated from /openapi.json by a real generator
(openapi-python-client, from PyPI) uploads and downloads through a live
gateway: what a team that generates its clients would do."""

from __future__ import annotations

import hashlib
import importlib
import io
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import requests

from tests.conftest import require_tool
from tests.constants import CHAT_ID
from tests.samples import sample

PACKAGE = "chert_gateway_generated"


@pytest.fixture(scope="module")
def generated(live_gateway_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The generated package, imported; its generator's output for the checks."""
    where = tmp_path_factory.mktemp("generated")
    document = where / "openapi.json"
    with requests.get(f"{live_gateway_url}/openapi.json", timeout=10) as answer:
        document.write_bytes(answer.content)
    run = subprocess.run(
        [
            require_tool("openapi-python-client"), "generate", "--path", str(document),
            "--meta", "none", "--output-path", str(where / PACKAGE),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    sys.path.insert(0, str(where))
    try:
        yield _Generated(importlib.import_module(PACKAGE), run.stdout + run.stderr)
    finally:
        sys.path.remove(str(where))
        for name in [m for m in sys.modules if m.startswith(PACKAGE)]:
            del sys.modules[name]


class _Generated:
    def __init__(self, package: ModuleType, output: str) -> None:
        self.package, self.output = package, output

    def module(self, name: str) -> Any:
        return importlib.import_module(f"{PACKAGE}.{name}")

    def client(self, url: str) -> Any:
        """The generated Client, closed by its `with`."""
        return self.module("client").Client(base_url=url)


def test_every_operation_is_generated(generated: _Generated) -> None:
    assert "will not be generated" not in generated.output
    for operation in (
        "send.send_file", "send.send_file_put", "send.upload_file", "send.upload_file_put",
        "send.send_message", "read.get_attachment", "read.get_attachment_content",
        "read.head_attachment_content",
    ):  # fmt: skip
        assert hasattr(generated.module(f"api.{operation}"), "sync_detailed"), operation


def test_the_generated_client_sends_a_file_and_reads_it_back(
    generated: _Generated, live_gateway_url: str
) -> None:
    with generated.client(live_gateway_url) as client:
        send_and_read_back(generated, client)


def send_and_read_back(generated: _Generated, client: Any) -> None:
    file_type = generated.module("types").File
    pdf = sample("application/pdf", 200_000)

    send_file = generated.module("api.send.send_file")
    response = send_file.sync_detailed(
        CHAT_ID,
        client=client,
        body=file_type(payload=io.BytesIO(pdf), file_name="invoice.pdf"),
        filename="invoice.pdf",
        text="See attached.",
    )
    assert response.status_code == 201, response.content
    sent = response.parsed
    assert type(sent).__name__ == "SentFile"
    assert (sent.filename, sent.content_type, sent.size_bytes) == (
        "invoice.pdf", "application/pdf", len(pdf),
    )  # fmt: skip
    assert sent.sha256 == hashlib.sha256(pdf).hexdigest()
    assert sent.message.status == "sent"
    assert response.headers["X-Request-ID"]

    metadata = generated.module("api.read.get_attachment").sync(sent.attachment_id, client=client)
    assert metadata.attachment.filename == "invoice.pdf"
    content = generated.module("api.read.get_attachment_content")
    download = content.sync_detailed(sent.attachment_id, client=client)
    assert download.status_code == 200
    assert download.content == pdf


def test_the_generated_form_body_sends_one_file(
    generated: _Generated, live_gateway_url: str
) -> None:
    file_type = generated.module("types").File
    form_type = generated.module("models").SendFileFilesBody
    png = sample("image/png", 50_000)
    body = form_type(
        file=file_type(payload=io.BytesIO(png), file_name="a.png", mime_type="image/png")
    )
    with generated.client(live_gateway_url) as client:
        response = generated.module("api.send.send_file").sync_detailed(
            CHAT_ID, client=client, body=body
        )
    assert response.status_code == 201, response.content
    assert (response.parsed.filename, response.parsed.size_bytes) == ("a.png", len(png))


def test_a_refusal_is_the_generated_error_model(
    generated: _Generated, live_gateway_url: str
) -> None:
    file_type = generated.module("types").File
    with generated.client(live_gateway_url) as client:
        response = generated.module("api.send.send_file").sync_detailed(
            "no-such-chat",
            client=client,
            body=file_type(payload=io.BytesIO(sample("image/png", 100))),
        )
    assert response.status_code == 404
    assert response.parsed.error.code == "not_found"
