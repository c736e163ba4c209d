"""`chert-gateway send` and `download` as a script uses them: exit codes it
can act on, one line (never a traceback) for each failure, retries shown,
standard input, and downloads."""

from __future__ import annotations

import hashlib
import shlex
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import BaseTestServer, TestClient

from gateway.api.keys import METRICS
from gateway.client.calls import Retry
from gateway.client.commands import EXIT_REFUSED, EXIT_SENT, EXIT_TEMPFAIL, EXIT_USAGE, Attempts
from gateway.simulator import ChertSimulator
from tests.constants import CHAT_ID, SECRET
from tests.processes import GatewayProcess, free_port, gateway_cli, shell
from tests.samples import sample

CLI = f"{shlex.quote(sys.executable)} -m gateway"


def url_of(gateway: TestClient[Any, Any]) -> str:
    return str(gateway.make_url("")).rstrip("/")


def one_line_no_traceback(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def pdf(tmp_path: Path) -> Path:
    path = tmp_path / "invoice.pdf"
    path.write_bytes(sample("application/pdf", 150_000))
    return path


async def test_a_refusal_exits_1_and_a_sent_file_0(
    gateway: TestClient[Any, Any], pdf: Path
) -> None:
    sent = await gateway_cli("send", str(pdf), "--chat", CHAT_ID, "--gateway", url_of(gateway))
    assert sent.code == EXIT_SENT, sent.err
    wrong_chat = await gateway_cli("send", str(pdf), "--chat", "nope", "--gateway", url_of(gateway))
    assert wrong_chat.code == EXIT_REFUSED
    assert "not_found (HTTP 404, Chert code 1004)" in one_line_no_traceback(wrong_chat.err)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--gateway", "127.0.0.1:8080"], "try http://127.0.0.1:8080"),
        (["--upload-only", "--chat", CHAT_ID], "--upload-only (and no --chat)"),
        ([], "give --chat"),
    ],
)
async def test_usage_mistakes_exit_2_with_one_line(pdf: Path, args: list[str], says: str) -> None:
    chat = ["--chat", CHAT_ID] if args[:1] == ["--gateway"] else []
    ran = await gateway_cli("send", str(pdf), *chat, *args)
    assert ran.code == EXIT_USAGE
    assert says in one_line_no_traceback(ran.err)


async def test_a_directory_and_a_missing_file_are_named(tmp_path: Path) -> None:
    for target, says in ((tmp_path, "is a directory"), (tmp_path / "gone.pdf", "no such file")):
        ran = await gateway_cli("send", str(target), "--chat", CHAT_ID)
        assert ran.code == EXIT_USAGE
        assert says in one_line_no_traceback(ran.err)


async def test_the_wrong_port_is_named_not_reported_as_a_500(
    chert_server: BaseTestServer, pdf: Path
) -> None:
    """Chert's own port (the simulator) answers 404 in its own shape."""
    wrong = str(chert_server.make_url("")).rstrip("/")
    ran = await gateway_cli("send", str(pdf), "--chat", CHAT_ID, "--gateway", wrong)
    assert ran.code == EXIT_REFUSED
    line = one_line_no_traceback(ran.err)
    assert "not_a_gateway" in line
    assert "API listener" in line
    assert "500" not in line


async def test_nothing_listening_is_worth_retrying_later(pdf: Path) -> None:
    ran = await gateway_cli(
        "send", str(pdf), "--chat", CHAT_ID, "--gateway", f"http://127.0.0.1:{free_port()}"
    )
    assert ran.code == EXIT_TEMPFAIL
    assert "gateway_unreachable" in ran.err.splitlines()[-1]
    assert "Traceback" not in ran.err


async def test_a_busy_chert_after_every_retry_exits_75_and_each_retry_is_said(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, pdf: Path
) -> None:
    simulator.faults.update({"fail_sends": 1000, "fail_send_code": 3002})
    ran = await gateway_cli("send", str(pdf), "--chat", CHAT_ID, "--gateway", url_of(gateway))
    assert ran.code == EXIT_TEMPFAIL
    retries = [line for line in ran.err.splitlines() if "retrying in" in line]
    assert len(retries) == 3  # 4 attempts
    assert "(upstream_unavailable:" in retries[0]
    assert "upstream_unavailable (HTTP 503" in ran.err.splitlines()[-1]
    keys = {
        r.json["message"]["idempotency_key"]
        for r in simulator.state.requests_to("POST", "/messages")
    }
    assert len(keys) == 1


async def test_a_retried_send_says_so_and_times_every_attempt(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, pdf: Path
) -> None:
    simulator.faults.update({"fail_sends": 4, "fail_send_code": 3002})
    ran = await gateway_cli("send", str(pdf), "--chat", CHAT_ID, "--gateway", url_of(gateway))
    assert ran.code == EXIT_SENT, ran.err
    assert "retrying in 1 s (upstream_unavailable" in ran.err
    assert ", 2 attempts" in ran.out
    seconds = float(ran.out.rsplit(", ", 2)[-2].split(" s in all")[0])
    assert seconds >= 1.0  # the wait between the attempts is counted


def test_the_progress_bar_starts_again_for_a_new_attempt() -> None:
    attempts = Attempts(1000, show_bar=True)
    with attempts.shown():
        assert attempts.progress is not None
        attempts.progress(700)
        attempts.retrying(Retry(attempt=2, wait_s=1, reason="overloaded"))
        bar = attempts._bar
        assert (bar.n, bar.total) == (0, 1000)
        attempts.progress(1000)
        assert bar.n == bar.total
    assert attempts.count == 2


async def test_standard_input_is_sent_chunked_with_its_name_and_type(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, pdf: Path
) -> None:
    ran = await shell(
        f"cat {shlex.quote(str(pdf))} | {CLI} send - --chat {CHAT_ID} --json"
        f" --filename scan.pdf --gateway {url_of(gateway)}"
    )
    assert ran.code == EXIT_SENT, ran.err
    answer = orjson.loads(ran.out)
    assert (answer["filename"], answer["content_type"]) == ("scan.pdf", "application/pdf")
    assert answer["sha256"] == hashlib.sha256(pdf.read_bytes()).hexdigest()
    # Chunked from the caller, so spooled by the gateway before its PUT.
    registry = gateway.server.app[METRICS].registry  # type: ignore[union-attr]
    relayed = "chert_gateway_first_byte_relay_seconds_count"
    assert registry.get_sample_value(relayed, {"mode": "spooled"}) == 1
    (put,) = simulator.state.requests_to("PUT")
    assert put.header("Content-Length") == str(pdf.stat().st_size)


async def test_a_type_and_a_name_given_on_the_command_line_win(
    gateway: TestClient[Any, Any], tmp_path: Path
) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(sample("audio/mpeg", 5000))
    ran = await gateway_cli(
        "send", str(blob), "--chat", CHAT_ID, "--json", "--filename", "memo.mp3",
        "--content-type", "audio/mpeg", "--gateway", url_of(gateway),
    )  # fmt: skip
    assert ran.code == EXIT_SENT, ran.err
    answer = orjson.loads(ran.out)
    assert (answer["filename"], answer["content_type"]) == ("memo.mp3", "audio/mpeg")


async def test_upload_only_then_download_under_its_name_to_a_file_and_to_stdout(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, pdf: Path, tmp_path: Path
) -> None:
    ran = await gateway_cli(
        "send", "--upload-only", str(pdf), "--json", "--gateway", url_of(gateway)
    )
    assert ran.code == EXIT_SENT, ran.err
    attachment_id = orjson.loads(ran.out)["attachment_id"]
    assert simulator.state.messages == []

    where = tmp_path / "downloads"
    where.mkdir()
    ran = await shell(f"cd {where} && {CLI} download {attachment_id} --gateway {url_of(gateway)}")
    assert ran.code == EXIT_SENT, ran.err
    assert f"saved {where / 'invoice.pdf'}" in ran.out or "saved invoice.pdf" in ran.out
    assert (where / "invoice.pdf").read_bytes() == pdf.read_bytes()

    copy = tmp_path / "copy.pdf"
    ran = await gateway_cli(
        "download", attachment_id, "-o", str(copy), "--gateway", url_of(gateway)
    )
    assert ran.code == EXIT_SENT, ran.err
    assert copy.read_bytes() == pdf.read_bytes()
    assert list(tmp_path.glob(".*.partial")) == []

    ran = await shell(
        f"{CLI} download {attachment_id} -o - --gateway {url_of(gateway)} | sha256sum"
    )
    assert ran.out.split()[0] == hashlib.sha256(pdf.read_bytes()).hexdigest()

    missing = await gateway_cli("download", "nope", "--gateway", url_of(gateway))
    assert missing.code == EXIT_REFUSED
    assert "not_found (HTTP 404" in one_line_no_traceback(missing.err)


async def test_serve_on_a_port_in_use_says_which_and_exits_1() -> None:
    async with GatewayProcess({}, "--simulate") as running:
        taken = running.api.removeprefix("http://")
        ran = await gateway_cli(
            "serve",
            "--simulate",
            env={"GATEWAY_LISTEN": taken, "GATEWAY_OPS_LISTEN": "127.0.0.1:0"},
        )
    assert ran.code == 1
    line = one_line_no_traceback(
        "\n".join(line for line in ran.err.splitlines() if not line.startswith("{"))
    )
    assert f"cannot listen on {taken}: address already in use" in line
    assert "GATEWAY_LISTEN" in line
    assert SECRET not in line
