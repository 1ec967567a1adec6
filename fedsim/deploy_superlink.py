"""A Flower SuperLink whose public address serves the Fleet API only.

Flower 1.41's ``flower-superlink`` serves the Fleet API (what SuperNodes call), the Control API
(what ``flwr`` calls: register and unregister node keys, start, stop and list runs) and the
Runtime/ServerAppIo API (what its ServerApp process calls) on one HTTPS port. With TLS alone,
anyone who holds the public ``ca.crt`` could then register their own node key on that port,
unregister real nodes and list or submit runs: SuperNode authentication would hold only against
those who never saw the certificate. This launcher builds Flower's own app from Flower's own
arguments and serves it twice from one process and one state:

- every API on ``--host:--port`` (loopback by default: the operator, ``flwr`` and the ServerApp);
- the Fleet API's routes only, nothing else, on ``--fleet-host:--fleet-port`` (the SuperNodes).

``python -m fedsim.deploy_superlink --fleet-host H --fleet-port P [flower-superlink args]``.
It relies on two internals of ``flwr==1.41.0`` (the version pyproject.toml pins):
``_parse_superlink_lifespan_config`` and ``SuperLinkLifespan``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

__all__ = ["FleetOnly", "fleet_paths", "main"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# Environment switches that make Flower start its legacy gRPC Control and Fleet servers on
# their default wildcard addresses (0.0.0.0:9093, 0.0.0.0:9092): never wanted here.
LEGACY_GRPC = ("FLWR_INTERNAL_GRPC_CONTROL_API", "FLWR_INTERNAL_GRPC_FLEET_API")


def fleet_paths() -> frozenset[str]:
    """The exact paths of Flower's Fleet API (``/v1/fleet/...``), from its own router."""
    from flwr.superlink.routers.fleet.router import router

    return frozenset(str(getattr(route, "path", "")) for route in router.routes)


class FleetOnly:
    """An ASGI app that passes a request on only if its path is one of ``paths`` exactly
    (no prefix match: ``/v1/fleet/../control/...`` is refused); 404 for anything else."""

    def __init__(self, app: App, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") in self.paths:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            body = b"not found: this address serves Flower's Fleet API only\n"
            headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})


def _listen(host: str, port: int, flag: str) -> socket.socket:
    """A bound socket (before any server starts: a busy port is one line, exit 2)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        sys.stderr.write(f"error: {flag} {host}:{port}: cannot listen ({exc.strerror}); "
                         "is another SuperLink running? choose another port\n")  # fmt: skip
        raise SystemExit(2) from exc
    return sock


class _Follower:
    """Mixin: a uvicorn server that leaves the process's signals to the main server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(control: Any, fleet: Any, sockets: tuple[socket.socket, socket.socket]) -> None:
    """Both servers until the main (control) one stops, by a signal or a failed startup."""
    fleet_task = asyncio.create_task(fleet.serve(sockets=[sockets[1]]))
    fleet_task.add_done_callback(lambda _: setattr(control, "should_exit", True))
    try:
        await control.serve(sockets=[sockets[0]])
    finally:
        fleet.should_exit = True
        await fleet_task


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--fleet-host", required=True)
    parser.add_argument("--fleet-port", type=int, required=True)
    ours, flower_args = parser.parse_known_args(argv)
    os.umask(0o077)  # the database, its journal and every file Flower writes: owner only
    for name in LEGACY_GRPC:
        os.environ.pop(name, None)

    import importlib

    import uvicorn
    from flwr.supercore.http_logging import get_uvicorn_log_config
    from flwr.supercore.logger import console_handler
    from flwr.superlink.main import create_app

    # the module, not the function of the same name that flwr.superlink.cli exports
    cli = importlib.import_module("flwr.superlink.cli.flower_superlink")
    sys.argv = ["flower-superlink", *flower_args]
    config = cli._parse_superlink_lifespan_config()
    sockets = (
        _listen(config.host, config.port, "--control-host/--control-port"),
        _listen(ours.fleet_host, ours.fleet_port, "--host/--port"),
    )
    app = create_app(config, cli.SuperLinkLifespan)
    common: dict[str, Any] = {
        "log_config": get_uvicorn_log_config(console_handler.level),
        "ssl_keyfile": config.ssl_keyfile,
        "ssl_certfile": config.ssl_certfile,
        "access_log": True,
    }
    control = uvicorn.Server(uvicorn.Config(app, lifespan="on", **common))
    fleet_server = type("FleetServer", (_Follower, uvicorn.Server), {})
    fleet = fleet_server(uvicorn.Config(FleetOnly(app, fleet_paths()), lifespan="off", **common))
    sys.stderr.write(
        f"fedsim: Fleet API (SuperNodes) on {ours.fleet_host}:{ours.fleet_port}; Control and "
        f"ServerAppIo APIs on {config.host}:{config.port} only\n"
    )
    asyncio.run(_serve(control, fleet, sockets))
    if not control.started:  # the app's startup failed (its log says why), as uvicorn.run exits
        raise SystemExit(3)


if __name__ == "__main__":
    main()
