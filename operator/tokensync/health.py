"""``/healthz`` (the process serves requests) and ``/readyz`` (its caches are synced).

A few lines of asyncio instead of a web framework: two fixed answers, no request bodies.
Served from the operator's own event loop, so a blocked loop fails the liveness probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

Check = Callable[[], bool]


class HealthServer:
    def __init__(self, port: int, *, ready: Check, host: str = "0.0.0.0") -> None:  # noqa: S104 - probed from outside
        self._port = port
        self._host = host
        self._ready = ready
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            parts = request_line.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else ""
            if path == "/healthz":
                status, text = "200 OK", "ok"
            elif path == "/readyz":
                status, text = ("200 OK", "ok") if self._ready() else ("503 Service Unavailable", "caches not synced")
            else:
                status, text = "404 Not Found", "not found"
            body = text.encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
