"""The `Date` header of every sandbox response, from the sandbox's clock: the time its
records are written at (`createdon`, `modifiedon`, an F&O entity's modification time), so a
client that takes the service's time from `Date` (a high-water mark's cap) sees one clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from email.utils import format_datetime
from typing import Any

from p2c_etl.sandbox.store import Clock

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class DatedApp:
    """An ASGI app whose HTTP responses carry `Date: <clock()>` (the server's own `Date`
    header must be off: uvicorn's `date_header=False`)."""

    def __init__(self, app: App, clock: Clock) -> None:
        self.app, self.clock = app, clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def dated(message: Message) -> None:
            if message["type"] == "http.response.start":
                stamp = format_datetime(self.clock(), usegmt=True).encode("latin-1")
                message["headers"] = [*message.get("headers", []), (b"date", stamp)]
            await send(message)

        await self.app(scope, receive, dated)
