"""Every shell block of the README, run as written in a fresh shell against
what `make run` starts (`chert-gateway serve --simulate`): its own bash
(`-e -o pipefail`, so every line counts), an empty directory but for the
checkout's `.venv`, and the environment a new terminal has. Only the
port differs (the test listens on port 0). The Python example runs the same
way with the venv's Python."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.processes import GatewayProcess, run

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
README_GATEWAY = "http://127.0.0.1:8790"


def blocks(language: str) -> list[str]:
    found = re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)
    return [b for b in found if not b.startswith("make ")]


def fresh_shell_env(home: Path) -> dict[str, str]:
    """A new terminal's environment: no venv on PATH, nothing this test set."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    return {"PATH": path, "HOME": str(home), "LANG": "C.UTF-8"}


def checkout_like(where: Path) -> Path:
    """An empty directory where `.venv/bin/…` works, as in the checkout."""
    where.mkdir()
    (where / ".venv").symlink_to(Path(sys.executable).parent.parent)
    return where


def test_the_readme_has_an_example_for_every_way_in() -> None:
    joined = "\n".join(blocks("sh"))
    for needle in (
        "/attachments?",  # single file
        "Transfer-Encoding: chunked",
        "-F file=@invoice.pdf",  # a form with one file
        "-F photo=@one.png",  # a form with several images
        "/messages",  # JSON
        "/v1/attachments?",  # upload only
        "/content",  # download
        "chert-gateway send",
        "chert-gateway download",
    ):
        assert needle in joined, needle


def test_every_curl_fails_on_a_refusal_and_ids_are_captured() -> None:
    for block in blocks("sh"):
        for command in re.findall(r"\bcurl\b[^|\n]*(?:\\\n[^|\n]*)*", block):
            assert "--fail-with-body" in command, command
        assert "…" not in block, f"a placeholder to fill in by hand:\n{block}"
    assert "ATTACHMENT_ID=$(" in README


def test_the_readme_says_why_curl_d_corrupts_binaries() -> None:
    assert "curl -d @invoice.pdf" in README
    assert "--data-binary @file" in README


@pytest.mark.parametrize("number", range(len(blocks("sh"))))
async def test_each_shell_block_runs_as_pasted(number: int, tmp_path: Path) -> None:
    require_tool("curl")
    block = blocks("sh")[number]
    async with GatewayProcess({}, "--simulate") as gateway:
        code, out, err = await run(
            "bash", "-e", "-o", "pipefail", "-c", block.replace(README_GATEWAY, gateway.api),
            env=fresh_shell_env(tmp_path), cwd=checkout_like(tmp_path / "checkout"),
            clean_env=True,
        )  # fmt: skip
    assert code == 0, (block, out, err)
    assert '"error"' not in out, (block, out)


async def test_the_python_example_runs_as_written(tmp_path: Path) -> None:
    (example,) = blocks("python")
    assert "asyncio.run(main())" in example
    async with GatewayProcess({}, "--simulate") as gateway:
        code, out, err = await run(
            sys.executable, "-c", example.replace(README_GATEWAY, gateway.api),
            env=fresh_shell_env(tmp_path), cwd=checkout_like(tmp_path / "checkout"),
            clean_env=True,
        )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "checkout" / "copy.pdf").read_bytes() == b"%PDF-1.7\n%%EOF\n"
    assert out.split()[1] == "2"


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
