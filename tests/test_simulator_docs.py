"""Chert's own documentation, run against the simulator.

The `curl` commands are taken from docs/chert-api/ as they stand; only the
host is swapped and the reader's placeholders (YOUR_SIGNING_SECRET, CHAT_ID,
att_abc…) are filled in, as a reader of the docs would.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import BaseTestServer

from gateway.simulator import ChertSimulator
from tests.conftest import require_tool
from tests.constants import CHAT_ID, SECRET
from tests.processes import shell
from tests.samples import PNG_MAGIC

DOCS = Path(__file__).parent.parent / "docs" / "chert-api"
CHERT_HOST = "https://console.trychert.com"


def attachment_page_commands() -> list[str]:
    text = (DOCS / "attachments.md").read_text()
    blocks = re.findall(r"```bash[^\n]*\n(.*?)```", text, flags=re.S)
    return [block for block in blocks if block.lstrip().startswith("curl")]


def follow_up_command() -> str:
    text = (DOCS / "send-follow-up-message.md").read_text()
    match = re.search(r"^(curl .*?^}')$", text, flags=re.S | re.M)
    assert match, "the follow-up page's curl example moved"
    return match.group(1)


class DocsReader:
    """Runs a documented command in bash, as someone following the page would."""

    def __init__(self, base_url: str, workdir: Path) -> None:
        self.base_url = base_url.rstrip("/")
        self.workdir = workdir
        self.env = {"CHERT_SIGNING_SECRET": SECRET, "CHAT_ID": CHAT_ID}

    async def run(self, command: str, **fill: str) -> Any:
        require_tool("curl")
        command = command.replace(CHERT_HOST, self.base_url)
        for placeholder, value in fill.items():
            command = command.replace(placeholder, value)
        code, out, err = await shell(command, env=self.env, cwd=self.workdir)
        assert code == 0, err
        return orjson.loads(out) if out.strip() else None


@pytest.fixture
def reader(chert_server: BaseTestServer, tmp_path: Path) -> DocsReader:
    return DocsReader(str(chert_server.make_url("")), tmp_path)


async def test_the_attachment_flow_as_documented(
    reader: DocsReader, simulator: ChertSimulator, tmp_path: Path
) -> None:
    create, upload, send, parallel, download = attachment_page_commands()
    invoice = b"%PDF-1.7\n" + os.urandom(204800 - 9)  # the size the page registers
    (tmp_path / "invoice.pdf").write_bytes(invoice)

    slot = await reader.run(create)
    assert set(slot) == {"attachment_id", "upload_url", "required_headers", "expires_at"}
    assert slot["upload_url"].startswith(reader.base_url)
    reader.env["UPLOAD_URL"] = slot["upload_url"]

    uploaded = await reader.run(upload)
    assert uploaded["attachment"]["size_bytes"] == 204800

    sent = await reader.run(
        send, YOUR_SIGNING_SECRET=SECRET, CHAT_ID=CHAT_ID, **{"att_abc...": slot["attachment_id"]}
    )
    assert sent["message"]["status"] == "sent"
    assert sent["message"]["parts"][1] == {"type": "media", "attachment_id": slot["attachment_id"]}

    images = {}
    for name in ("att_aaa...", "att_bbb...", "att_ccc..."):
        images[name] = await upload_image(reader)
    grouped = await reader.run(parallel, **images)
    assert grouped["message"]["status"] == "sent"

    reader.env.update({"ATTACHMENT_ID": slot["attachment_id"], "SLUG": "acme"})
    await reader.run(download)
    assert (tmp_path / "attachment.bin").read_bytes() == invoice
    (get_content,) = simulator.state.requests_to("GET", "/content")
    assert get_content.header("x-chert-tenant") == "acme"


async def upload_image(reader: DocsReader) -> str:
    """Create and fill a PNG slot with the page's own step 1 and 2, adapted to a PNG."""
    create, upload, *_ = attachment_page_commands()
    png = PNG_MAGIC + os.urandom(1000)
    (reader.workdir / "photo.png").write_bytes(png)
    slot = await reader.run(
        create.replace("invoice.pdf", "photo.png")
        .replace("application/pdf", "image/png")
        .replace("204800", str(len(png)))
    )
    reader.env["UPLOAD_URL"] = slot["upload_url"]
    await reader.run(
        upload.replace("application/pdf", "image/png").replace("invoice.pdf", "photo.png")
    )
    return str(slot["attachment_id"])


async def test_the_follow_up_text_message_as_documented(
    reader: DocsReader, simulator: ChertSimulator
) -> None:
    first = await reader.run(follow_up_command())
    again = await reader.run(follow_up_command())
    assert first["message"]["parts"] == [{"type": "text", "value": "How about 3pm PT?"}]
    assert first["message"]["chat_id"] == CHAT_ID
    # The page's idempotency_key makes the repeat return the first message.
    assert again == first
    assert len(simulator.state.messages) == 1


async def test_the_documented_rules_are_enforced(
    reader: DocsReader, simulator: ChertSimulator
) -> None:
    """The page's error table: 1003 missing field, 1002 bad shape / not uploaded."""
    base = f"{reader.base_url}/api/v1"
    auth = f"-H 'Authorization: Bearer {SECRET}' -H 'Content-Type: application/json'"

    async def post(path: str, body: dict[str, Any]) -> Any:
        data = orjson.dumps(body).decode()
        return await reader.run(f"curl -sS -X POST {base}{path} {auth} -d '{data}'")

    assert (await post("/attachments", {"filename": "a.pdf"}))["error"]["code"] == 1003
    too_big = {"filename": "a.pdf", "content_type": "application/pdf", "size_bytes": 10**9}
    assert (await post("/attachments", too_big))["error"]["code"] == 1002
    exe = {"filename": "a.exe", "content_type": "application/x-msdownload", "size_bytes": 10}
    assert "unsupported MIME type" in (await post("/attachments", exe))["error"]["message"]

    messages = f"/chats/{CHAT_ID}/messages"
    top_level = {"parts": [{"type": "text", "value": "hi"}]}
    assert (await post(messages, top_level))["error"]["code"] == 1002
    assert (await post(messages, {"message": {}}))["error"]["code"] == 1003
    not_uploaded = {"message": {"parts": [{"type": "media", "attachment_id": "nope"}]}}
    assert (await post(messages, not_uploaded))["error"]["code"] == 1002
    one_image = {
        "parallel_attachments": True,
        "message": {"parts": [{"type": "text", "value": "x"}]},
    }
    assert (await post(messages, one_image))["error"]["code"] == 1002
    assert simulator.state.messages == []
