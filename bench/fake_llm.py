"""A fake OpenAI-compatible server for the I/O-bound benchmark: every ``POST
/v1/chat/completions`` is answered after a fixed latency with one scripted JSON answer.

It runs in its own process (``python -m bench.fake_llm --port P --latency 0.2 --answer
'{...}'``) so that its CPU time is not charged to the worker under test. HTTP/1.1 with
keep-alive on stdlib asyncio streams: the client (httpx under the openai SDK) opens one
connection per concurrent request and reuses it, which is all this needs to understand.
On SIGTERM it prints one JSON line with the number of requests served and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

SERVED = 0


def completion(content: str) -> bytes:
    return json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 400, "completion_tokens": 60, "total_tokens": 460},
    }).encode()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, latency: float,
                 body: bytes) -> None:
    global SERVED
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            await asyncio.sleep(latency)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
            SERVED += 1
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(port: int, latency: float, answer: str) -> None:
    body = completion(answer)
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, latency=latency, body=body), "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"listening": port}), flush=True)
    async with server:
        await stop.wait()
    print(json.dumps({"served": SERVED}), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.fake_llm")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--latency", type=float, default=0.2, help="seconds before each answer")
    p.add_argument("--answer", required=True, help="the assistant message content (JSON text)")
    a = p.parse_args(argv)
    asyncio.run(serve(a.port, a.latency, a.answer))


if __name__ == "__main__":
    main(sys.argv[1:])
