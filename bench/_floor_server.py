"""The floor of the HTTP stack for the feature-server benchmark: a minimal ASGI app on uvicorn with the
feature server's own options (:func:`lakebed.http.server_options`), answering every request with the same
pre-serialised bytes. ``python -m bench._floor_server PORT BODY_FILE``."""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

from lakebed.http import server_options


def main(argv: list[str]) -> int:
    port, body_path = int(argv[0]), argv[1]
    with open(body_path, "rb") as handle:
        body = handle.read()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:  # read the request body, as any real handler does
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, **server_options("127.0.0.1", port, access_log=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
