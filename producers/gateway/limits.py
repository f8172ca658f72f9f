"""A cap on request bodies, answered 413 before a route parses anything.

Hand-written because neither Starlette nor FastAPI caps bodies, and a cap must hold for bodies
sent without a Content-Length (chunked) too: this counts bytes as they arrive. Uploads to
/v1/files get their own, larger cap.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tierq.producers.gateway.errors import APIError


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_file_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_file_bytes = max_file_bytes

    def limit_for(self, path: str) -> int:
        return self.max_file_bytes if path.rstrip("/") == "/v1/files" else self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if (
            declared is not None
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > limit
        ):
            await self._refuse(limit, scope, receive, send)
            return
        seen = 0
        started = exceeded = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app's answer to a body cut short is replaced by the 413 below
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
        if exceeded and not started:
            # A body sent without a Content-Length (chunked) went over while being read; the
            # app may have turned that into an answer of its own (a parse error): not sent.
            await self._refuse(limit, scope, receive, send)

    @staticmethod
    async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        error = APIError(
            413,
            f"request body over the limit of {limit} bytes",
            code="request_too_large",
            headers={"Connection": "close"},
        )
        await error.response()(scope, receive, send)
