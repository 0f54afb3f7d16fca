"""ASGI extensions the transports use when the server announces them.

``SEND_TEXTS``: several WebSocket text frames in one send, ``{"type": SEND_TEXTS, "texts":
[bytes, ...]}``, each item one frame's UTF-8 payload (``app/uvicorn_batched_websocket.py``
implements it on uvicorn). Where it is not announced (other servers, the test client), the
WebSocket transport sends frame by frame.
"""

SEND_TEXTS = "chat.websocket.send_texts"
