"""Sending an answer over the wire: a stream chunk by chunk, and the faults that cut it short.

The API streams a completion as it is generated, so a client sees the role chunk first, then
the content a few tokens at a time, then the finish chunk, the usage chunk (with
`stream_options.include_usage`) and `data: [DONE]`; and a stream can fail after it started,
which no status code can say any more. Two such failures are simulated, each after a chosen
number of chunks:

- `stream_cut`: the connection is closed mid-body (the chunked encoding never ends), which the
  openai SDK reports as `APIConnectionError` while the client iterates;
- `stream_error`: an event holding `{"error": {...}}` in the API's error shape, then the end of
  the body with no `[DONE]`, which the SDK raises as `openai.APIError`.

A non-streamed answer can be cut too: its headers promise the full body, half of it is sent,
then the connection is closed.

With no delay between chunks and no fault, a stream is sent in one write: the simulator
shares small machines with the system under test and must spend little CPU per request.
"""

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

StreamFaultKind = Literal["stream_cut", "stream_error"]


@dataclass(frozen=True, slots=True)
class StreamFault:
    """A failure after `after` chunks: a cut, or the error event `error_event`."""

    kind: StreamFaultKind
    after: int
    error_event: bytes = b""


class EventStreamResponse(Response):
    """A `text/event-stream` answer sent with chunked encoding, as the API streams.

    `events` ends with the `data: [DONE]` event; `chunk_delay_seconds` separates two
    chunks; `fault` ends the stream early.
    """

    def __init__(
        self,
        events: Sequence[bytes],
        headers: Mapping[str, str],
        *,
        chunk_delay_seconds: float = 0.0,
        fault: StreamFault | None = None,
    ) -> None:
        super().__init__(None, 200, headers, media_type="text/event-stream")
        # Without content-length, uvicorn uses `transfer-encoding: chunked`.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.chunk_delay_seconds = chunk_delay_seconds
        self.fault = fault
        if fault is None:
            self.events = list(events)
        else:
            chunks = list(events[:-1])  # never `[DONE]`: a failed stream does not finish
            self.events = chunks[: fault.after]
            if fault.kind == "stream_error":
                self.events.append(fault.error_event)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        cut = self.fault is not None and self.fault.kind == "stream_cut"
        if self.chunk_delay_seconds > 0:
            if not await _unless_client_leaves(self._send_paced(send), receive):
                return
            if not cut:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            body = b"".join(self.events)
            await send({"type": "http.response.body", "body": body, "more_body": cut})
        if cut:
            await hang_up(receive)

    async def _send_paced(self, send: Send) -> None:
        for number, event in enumerate(self.events):
            if number:
                await asyncio.sleep(self.chunk_delay_seconds)
            await send({"type": "http.response.body", "body": event, "more_body": True})


class CutBodyResponse(Response):
    """A non-streamed answer whose connection is closed halfway through the body."""

    def __init__(self, body: bytes, headers: Mapping[str, str]) -> None:
        super().__init__(body, 200, headers, media_type="application/json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        half = self.body[: len(self.body) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})
        await hang_up(receive)


async def hang_up(receive: Receive) -> None:
    """Close the client's connection now, whatever was or was not sent, and wait for it to go.

    ASGI has no message for this, so the transport is taken from uvicorn's per-request
    cycle object, whose bound `receive` is what Starlette hands the endpoint. Whatever was
    written before is flushed first (an asyncio transport's `close` does that).
    """
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("closing a connection needs uvicorn, which exposes it")
    transport.close()
    await wait_for_disconnect(receive)


async def wait_for_disconnect(receive: Receive) -> None:
    """Return once the client has gone (or the response is complete)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_client_leaves(sending: Awaitable[None], receive: Receive) -> bool:
    """Run `sending` to its end (True), or stop it as soon as the client hangs up (False)."""
    sender = asyncio.ensure_future(sending)
    watcher = asyncio.ensure_future(wait_for_disconnect(receive))
    done, pending = await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    if sender in done:
        sender.result()
        return True
    return False
