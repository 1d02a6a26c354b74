"""A minimal acking peer for the relay bench: answers every change `applied`.

Runs as its own process (so it does not share the relay's CPU) on asyncio streams with
orjson. `GET /stats` returns, per received change, the arrival time (for latency).
Usage: python bench/relay/peer.py PORT
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson

arrivals: dict[str, float] = {}


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            if head.startswith(b"GET /stats"):
                answer = orjson.dumps(arrivals)
            else:
                now = time.time()
                batch = orjson.loads(body)
                changes = batch["changes"]
                for change in changes:
                    arrivals[change["idempotency_key"]] = now
                answer = orjson.dumps(
                    {
                        # The sender's own version: its client reads that one fastest.
                        "protocol": batch.get("protocol", "cdc-bridge/1"),
                        "results": [
                            {"idempotency_key": c["idempotency_key"], "status": "applied"}
                            for c in changes
                        ],
                    }
                )
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(answer)).encode()
                + b"\r\n\r\n"
                + answer
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
