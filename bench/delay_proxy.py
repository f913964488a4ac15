"""A TCP relay that holds every chunk for a fixed delay in each direction.

Real nodes are remote; on loopback every round trip is free, which hides designs that wait on
one node at a time. ``tc netem`` is not available here, so this relay stands in for the
network: ``python -m bench.delay_proxy DELAY_MS LISTEN_PORT:TARGET_PORT ...``.
"""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Forward chunks in order, each one ``delay`` after it arrived (a pipe, not a stop-and-go)."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def sender() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    task = asyncio.create_task(sender())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, data))
    except ConnectionError:
        pass
    queue.put_nowait((loop.time() + delay, b""))
    try:
        await task
    except ConnectionError:
        pass


async def serve(listen_port: int, target_port: int, delay: float) -> asyncio.Server:
    async def handle(client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, server_w, delay), _pipe(server_r, client_w, delay))

    return await asyncio.start_server(handle, "127.0.0.1", listen_port, backlog=512)


async def main(delay_ms: float, pairs: list[tuple[int, int]]) -> None:
    servers = [await serve(listen, target, delay_ms / 1000) for listen, target in pairs]
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    delay = float(sys.argv[1])
    pairs = [tuple(int(p) for p in arg.split(":")) for arg in sys.argv[2:]]
    asyncio.run(main(delay, pairs))
