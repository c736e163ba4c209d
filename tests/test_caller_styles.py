"""Each way a caller commonly sends one file, against a live gateway
(`serve --simulate`): curl in its four spellings, requests in two, httpie
in two. Each must give the one answer of the single-file route."""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import require_tool
from tests.constants import CHAT_ID
from tests.processes import GatewayProcess, shell
from tests.samples import sample

PDF = sample("application/pdf", 120_000)
PYTHON = shlex.quote(sys.executable)
STYLES = {
    "curl -T": "curl -sS --fail-with-body -T invoice.pdf {url}",
    "curl --data-binary": "curl -sS --fail-with-body --data-binary @invoice.pdf {url}",
    "curl -F": "curl -sS --fail-with-body -F file=@invoice.pdf {url}",
    "curl chunked stdin": (
        "cat invoice.pdf | curl -sS --fail-with-body -T - -H 'Transfer-Encoding: chunked' {url}"
    ),
    "requests data=": (
        f"{PYTHON} -c 'import requests, sys; r = requests.post(sys.argv[1], "
        'data=open("invoice.pdf", "rb")); print(r.text); r.raise_for_status()\' {url}'
    ),
    "requests files=": (
        f"{PYTHON} -c 'import requests, sys; r = requests.post(sys.argv[1], "
        'files={{"file": open("invoice.pdf", "rb")}}); print(r.text); r.raise_for_status()\' {url}'
    ),
    "httpie body": "http --check-status --ignore-stdin --body POST {url} @invoice.pdf",
    "httpie form": "http --check-status --ignore-stdin --body -f POST {url} file@invoice.pdf",
}


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    """The tools on PATH as a caller has them (httpie from the test extra)."""
    require_tool("curl")
    require_tool("http")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {"PATH": path}


@pytest.mark.parametrize("style", sorted(STYLES))
async def test_each_caller_style_sends_one_file(
    style: str, tools: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "invoice.pdf").write_bytes(PDF)
    async with GatewayProcess({}, "--simulate") as gateway:
        url = shlex.quote(f"{gateway.api}/v1/chats/{CHAT_ID}/attachments")
        code, out, err = await shell(STYLES[style].format(url=url), env=tools, cwd=tmp_path)
    assert code == 0, (style, out, err)
    answer = orjson.loads(out)
    assert answer["content_type"] == "application/pdf", answer
    assert answer["size_bytes"] == len(PDF)
    assert answer["sha256"] == hashlib.sha256(PDF).hexdigest()
    assert answer["message"]["status"] == "sent"
    print(f"\n{style}: 201 {answer['filename']} {answer['content_type']}")
