"""A TCP proxy that delays every request by a fixed time: a Redis master
as if it were on another host.  Used by bench/pgbench.sh to show that
redlock asks its masters in parallel (with a network delay, three masters
should cost about what one does), which CPU sharing hides on loopback.

    python3 bench/delay_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS

Bytes from the client are forwarded after DELAY_MS, in order; replies go
back at once.  Listens on 127.0.0.1 only."""

import asyncio
import sys


async def delayed_pipe(reader, writer, delay):
    """Copy reader to writer, each chunk DELAY seconds after it arrived."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def sender():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            pause = due - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            writer.write(data)
            await writer.drain()
        writer.close()

    task = asyncio.create_task(sender())
    while data := await reader.read(65536):
        queue.put_nowait((loop.time() + delay, data))
    queue.put_nowait((0, None))
    await task


async def pipe(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def main(listen, target, delay):
    async def handle(creader, cwriter):
        try:
            sreader, swriter = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            cwriter.close()
            return
        await asyncio.gather(delayed_pipe(creader, swriter, delay),
                             pipe(sreader, cwriter), return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000))
