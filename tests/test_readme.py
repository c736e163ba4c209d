"""Every shell example in the README, run as written against what `make run`
starts (`chert-gateway serve --simulate`), in a directory holding the files
the examples name. Only the port differs (the test listens on port 0), and
`ATTACHMENT_ID=…` takes the id the upload before it answered, as a reader
would fill it in."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import require_tool
from tests.processes import GatewayProcess, shell
from tests.samples import sample

ROOT = Path(__file__).resolve().parent.parent
README_GATEWAY = "http://127.0.0.1:8080"
FILES = {
    "invoice.pdf": "application/pdf",
    "clip.mp4": "video/mp4",
    "one.jpg": "image/jpeg",
    "two.jpg": "image/jpeg",
    "three.jpg": "image/jpeg",
}


def readme_commands() -> list[str]:
    """Shell commands of the README's ```sh blocks, continuation lines joined."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip() and not command.startswith("make "):
                commands.append(command.strip())
    return commands


def test_the_readme_has_an_example_for_every_way_in() -> None:
    joined = "\n".join(readme_commands())
    for needle in (
        "/attachments?",  # single file
        "Transfer-Encoding: chunked",
        "-F photo=@one.jpg",  # a form with several images
        "/messages",  # JSON
        "/v1/attachments?",  # upload only
        "/content",  # download
        "chert-gateway send",
    ):
        assert needle in joined, needle


async def test_every_readme_example_works_against_make_run(tmp_path: Path) -> None:
    require_tool("curl")
    for name, content_type in FILES.items():
        (tmp_path / name).write_bytes(sample(content_type, 200_000))
    async with GatewayProcess({}, "--simulate") as gateway:
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "CHERT_GATEWAY_URL": gateway.api,
        }
        last_answer: dict[str, Any] = {}
        for command in readme_commands():
            if match := re.fullmatch(r"(\w+)=(\S+)(\s+#.*)?", command):
                name, value = match[1], match[2]
                env[name] = last_answer["attachment_id"] if value == "…" else value
                continue
            code, out, err = await shell(
                command.replace(README_GATEWAY, gateway.api), env=env, cwd=tmp_path
            )
            assert code == 0, (command, err)
            if out.strip().startswith("{"):
                answer = orjson.loads(out)
                assert "error" not in answer, (command, answer)
                last_answer = answer
            elif "-o " not in command:
                assert "sent " in out, (command, out)  # chert-gateway send, for a person
    copy = tmp_path / "copy.pdf"
    assert copy.read_bytes() == (tmp_path / "invoice.pdf").read_bytes()


def test_the_readme_states_every_limit_with_the_codes_number() -> None:
    """The Limits table names each limit with the number the code enforces."""
    from gateway.api import form, http_protocol, intake
    from gateway.api.app import MAX_JSON_BODY_BYTES
    from gateway.chert import message_shape
    from gateway.ops.config import CHERT_MAX_UPLOAD_BYTES, OPTIONS_BY_ENV

    section = (ROOT / "README.md").read_text().split("## Limits", 1)[1].split("\n## ", 1)[0]
    rows = {
        line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")
    }
    expected = {
        "a file": CHERT_MAX_UPLOAD_BYTES,
        "the request line, each header line": http_protocol.MAX_LINE_BYTES,
        "headers in one request (or one form part)": http_protocol.MAX_HEADERS,
        "the time to send the headers": f"{http_protocol.HEADER_TIMEOUT_SECONDS:g} s",
        "a pause between two body chunks": OPTIONS_BY_ENV["GATEWAY_CLIENT_TIMEOUT"].default,
        "a filename": intake.MAX_FILENAME_BYTES,
        "a caption (`?text=`)": intake.MAX_CAPTION_CHARS,
        "files in a form": form.MAX_FILES,
        "other fields in a form (`text`, `rich_link`, `parallel_attachments`)": form.MAX_FIELDS,
        "one form field": form.MAX_FIELD_BYTES,
        "all of a form's fields": form.MAX_FIELDS_TOTAL_BYTES,
        "a whole form, declared or counted (preamble and epilogue too)": form.FORM_FRAMING_BYTES,
        "a JSON message body": MAX_JSON_BODY_BYTES,
        "parts in a JSON message": message_shape.MAX_PARTS,
        "uploads at once": OPTIONS_BY_ENV["GATEWAY_MAX_IN_FLIGHT"].default,
    }
    for what, number in expected.items():
        assert what in rows, f"the README's Limits table has no row for {what!r}"
        assert f" {number}" in rows[what], (what, number, rows[what])
