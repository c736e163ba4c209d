"""`chert-gateway serve | simulate | send | download | demo`: the command line.

Every `serve` flag is a setting of `config.OPTIONS`; a flag overrides its
environment variable, and both go through the same validation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from gateway import __version__
from gateway.client.commands import add_download_command, add_send_command
from gateway.demo import add_demo_command
from gateway.ops import logs, tracing, tuning
from gateway.ops.config import OPTIONS, ConfigError, Settings, parse_listen
from gateway.server import RUNNER_OPTIONS, Running, serve, start_site
from gateway.simulator import ChertSimulator
from gateway.simulator import tls as simulator_tls
from gateway.simulator.idle import DROP_WAYS
from gateway.simulator.state import DOCS_CHAT_ID

EXAMPLE_FILE = Path(__file__).parent / "examples" / "hello.png"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chert-gateway",
        description="A streaming upload gateway in front of Chert's messaging API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser(
        "serve",
        help="run the gateway",
        description=(
            "Run the gateway. Each flag overrides the environment variable named in its help."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for option in OPTIONS:
        serve_cmd.add_argument(
            option.flag,
            dest=option.env,
            metavar=option.metavar,
            help=f"{option.help} [env {option.env}; default: {option.default or 'none'}]",
            default=argparse.SUPPRESS,
        )
    serve_cmd.add_argument(
        "--simulate",
        action="store_true",
        help="embed the Chert simulator as the upstream (for demos and trials)",
    )
    _add_log_format(serve_cmd)

    sim_cmd = commands.add_parser(
        "simulate",
        help="run the Chert simulator on its own",
        description="Serve Chert's documented API (attachments, messages) for tests and demos.",
    )
    sim_cmd.add_argument("--host", default="127.0.0.1")
    sim_cmd.add_argument("--port", type=int, default=8090)
    sim_cmd.add_argument(
        "--secret",
        default=os.environ.get("CHERT_SIGNING_SECRET") or None,
        help="bearer secret callers must present [env CHERT_SIGNING_SECRET; default: generated]",
    )
    sim_cmd.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a throwaway CA, written to a file whose path is printed",
    )
    sim_cmd.add_argument("--tls-cert", type=Path, metavar="PEM", help="your own certificate chain")
    sim_cmd.add_argument("--tls-key", type=Path, metavar="PEM", help="its private key")
    sim_cmd.add_argument(
        "--drop-idle-after",
        type=float,
        metavar="SECONDS",
        help="drop keep-alive connections idle this long, as a load balancer does",
    )
    sim_cmd.add_argument(
        "--drop-idle-how",
        choices=DROP_WAYS,
        default="close",
        help="close them (a FIN), or forget them (the next request on one is reset)",
    )
    sim_cmd.add_argument(
        "--discard",
        action="store_true",
        help="hash uploads but store nothing (benchmarks); /content then answers 404",
    )
    _add_log_format(sim_cmd)
    add_send_command(commands)
    add_download_command(commands)
    add_demo_command(commands)
    return parser


def _add_log_format(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--log-format",
        choices=("auto", "json", "text"),
        default="auto",
        help="json lines, readable text, or auto (text on a terminal)",
    )


def _configure_logs(args: argparse.Namespace) -> None:
    logs.configure(json_lines={"auto": None, "json": True, "text": False}[args.log_format])


def curl_example(api: str) -> str:
    """A ready-to-paste curl line that sends the bundled example image."""
    path = (
        "/v1/chats/"
        + DOCS_CHAT_ID
        + "/attachments?filename=hello.png&text=Hello%20from%20chert-gateway"
    )
    target = [f"{api}{path}"]
    if api.startswith("unix:"):
        target = ["--unix-socket", api.removeprefix("unix:"), f"http://localhost{path}"]
    return shlex.join(
        ["curl", "-sS", "-T", str(EXAMPLE_FILE), "-H", "Content-Type: image/png", *target]
    )


def _banner(running: Running) -> str:
    lines = [
        f"chert-gateway {__version__} is ready.",
        f"  API:   {running.api}",
        f"  ops:   {running.ops}/metrics  /healthz  /readyz",
        f"  Chert: {running.chert}",
    ]
    if running.simulated_secret:
        lines.append(f"         (embedded simulator; its secret: {running.simulated_secret})")
    lines += ["", "Send a file:", f"  {curl_example(running.api)}", "", "Stop with Ctrl-C.", ""]
    return "\n".join(lines)


def _serve(args: argparse.Namespace) -> int:
    overrides = {o.env: getattr(args, o.env) for o in OPTIONS if hasattr(args, o.env)}
    try:
        settings = Settings.from_env({**os.environ, **overrides}, simulate=args.simulate)
    except ConfigError as exc:
        print(f"chert-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    _configure_logs(args)
    try:
        tracing.start({**os.environ, **overrides})
    except ValueError as exc:
        print(f"chert-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    tuning.tune_malloc()
    tuning.tune_gc()

    def announce(running: Running) -> None:
        print(_banner(running), file=sys.stderr, flush=True)

    try:
        with asyncio.Runner(loop_factory=tuning.event_loop_factory(settings.event_loop)) as runner:
            runner.run(serve(settings, on_ready=announce))
    except OSError as exc:
        print(
            f"chert-gateway: {_listen_failure(exc)} (GATEWAY_LISTEN, GATEWAY_OPS_LISTEN)",
            file=sys.stderr,
        )
        return 1
    finally:
        tracing.stop()  # the spans still batched are sent
    return 0


def _listen_failure(exc: OSError) -> str:
    """`cannot listen on 127.0.0.1:8790: address already in use`, from the bind's error."""
    # asyncio's text: "error while attempting to bind on address ('h', p): reason"
    reason = (exc.strerror or str(exc)).rsplit(": ", 1)[-1].lower()
    where = re.search(r"\('?([^',]+)'?, (\d+)\)", str(exc))
    address = f"{where.group(1)}:{where.group(2)}" if where else str(exc.filename or "")
    return f"cannot listen on {address or 'the address'}: {reason}"


def _simulate(args: argparse.Namespace) -> int:
    _configure_logs(args)
    secret = args.secret or secrets.token_urlsafe(24)
    if (args.tls_cert is None) != (args.tls_key is None):
        print("chert-gateway: simulate: give --tls-cert and --tls-key together", file=sys.stderr)
        return 2

    async def run(workdir: Path) -> None:
        context, ca_path = None, None
        if args.tls_cert is not None:
            context = simulator_tls.from_files(args.tls_cert, args.tls_key)
        elif args.tls:
            context, ca_path = simulator_tls.throwaway(workdir)
        simulator = ChertSimulator(secret, store_bodies=not args.discard)
        simulator.faults.update(
            {"drop_idle_after_seconds": args.drop_idle_after, "drop_idle_how": args.drop_idle_how}
        )
        runner = web.AppRunner(simulator.app(), **RUNNER_OPTIONS)
        await runner.setup()
        url = await start_site(runner, parse_listen(f"{args.host}:{args.port}"), context)
        print(f"Chert simulator on {url}  (bearer secret: {secret})", file=sys.stderr, flush=True)
        if ca_path is not None:
            print(f"Its CA: {ca_path}", file=sys.stderr)
            line = shlex.join(
                [f"CHERT_API_URL={url}", f"CHERT_CA_FILE={ca_path}",
                 f"CHERT_SIGNING_SECRET={secret}", "chert-gateway", "serve"]
            )  # fmt: skip
            print(f"Point a gateway at it:\n  {line}", file=sys.stderr, flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        with (
            contextlib.suppress(KeyboardInterrupt),
            tempfile.TemporaryDirectory(prefix="chert-simulator-tls-") as workdir,
        ):
            asyncio.run(run(Path(workdir)))
    except OSError as exc:
        print(f"chert-gateway: simulate: {_listen_failure(exc)} (--host, --port)", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "simulate":
        return _simulate(args)
    result: int = args.run(args)
    return result
