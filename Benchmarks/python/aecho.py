"""The async benchmarks' Python peer: asyncio streams, as asyncio users write a server.

    python3 aecho.py TIMEOUT     (seconds; 0 = none)

With a timeout, each read runs under `asyncio.timeout()` (Python 3.11+): a connection idle that
long is closed. Prints "PORT n", serves until killed.
"""
import asyncio
import socket
import sys


async def serve(reader, writer, timeout):
    try:
        while True:
            if timeout > 0:
                async with asyncio.timeout(timeout):
                    data = await reader.read(4096)
            else:
                data = await reader.read(4096)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()


async def main(timeout):
    server = await asyncio.start_server(lambda r, w: serve(r, w, timeout), "127.0.0.1", 0, backlog=4096)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        seconds = float(sys.argv[1])
        if seconds < 0:
            raise ValueError
    except (IndexError, ValueError):
        sys.exit("usage: aecho.py TIMEOUT (seconds, 0 = none)")
    asyncio.run(main(seconds))
