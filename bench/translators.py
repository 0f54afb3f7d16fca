"""What a protocol translator costs: server CPU per text event of the same long reply streamed
over the plain SSE route, the AI SDK route, the AG-UI route, ChatKit, the WebSocket and the AI
SDK's WebSocket transport, one reply after another, in one run.

    .venv/bin/python -m bench.translators [--replies 20] [--words 2000]
"""

from __future__ import annotations

import argparse
import json

import httpx
from websockets.sync.client import connect

from bench.procstat import cpu_seconds
from bench.server import running_server, token


TEXT_MARKER = {
    "sse": b'"type":"text"', "ai-sdk": b'"type":"text-delta"', "ag-ui": b'"type":"TEXT_MESSAGE_CONTENT"',
    "chatkit": b'"type":"assistant_message.content_part.text_delta"',
    "ws": '"type":"text"', "ai-sdk-ws": '"type":"text-delta"',
}
ROUTES = ("sse", "ai-sdk", "ag-ui", "chatkit", "ws", "ai-sdk-ws")


def route(url: str, name: str, words: int) -> tuple[str, str, dict]:
    message = "complete " + " ".join(f"w{n}" for n in range(words))  # a reply quoting them all
    if name == "sse":
        return "POST", f"{url}/api/bench/chat/stream", {"message": message}
    if name == "ai-sdk":
        return "POST", f"{url}/api/bench/ai-sdk/chat", {
            "id": "c", "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": message}]}]
        }
    if name == "ag-ui":
        return "POST", f"{url}/api/bench/ag-ui", {
            "threadId": "t", "runId": "r", "messages": [{"id": "u", "role": "user", "content": message}]
        }
    return "POST", f"{url}/chatkit", {
        "type": "threads.create",
        "params": {"input": {"content": [{"type": "input_text", "text": message}], "attachments": [],
                             "inference_options": {}}},
    }


def socket_reply(socket, name: str, n: int, message: str) -> int:
    """One reply over a socket; its text events."""
    if name == "ws":
        socket.send(json.dumps({"type": "chat", "message": message}))
        last = '"type":"done"'
    else:
        socket.send(json.dumps({"type": "send", "requestId": f"r{n}", "id": f"c{n}", "trigger": "submit-message",
                                "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": message}]}],
                                "headers": {}, "body": {}}))
        last = '"type":"end"'
    texts = 0
    while last not in (frame := socket.recv()):
        texts += frame.count(TEXT_MARKER[name])
    return texts


def measure_socket(url: str, pid: int, name: str, replies: int, words: int) -> dict:
    message = "complete " + " ".join(f"w{n}" for n in range(words))
    path = "ws" if name == "ws" else "ai-sdk/ws"
    with connect(f"{url.replace('http', 'ws', 1)}/api/bench/{path}?token={token('bench')}", max_size=None) as socket:
        socket_reply(socket, name, -1, message)  # warm-up
        before = cpu_seconds(pid)
        events = sum(socket_reply(socket, name, n, message) for n in range(replies))
        spent = cpu_seconds(pid) - before
    return {"route": name, "text_events": events, "server_cpu_us_per_event": round(spent / events * 1e6, 1)}


def measure(url: str, pid: int, name: str, replies: int, words: int) -> dict:
    if name in ("ws", "ai-sdk-ws"):
        return measure_socket(url, pid, name, replies, words)
    headers = {"Authorization": f"Bearer {token('bench')}"}
    method, target, body = route(url, name, words)
    events = 0
    with httpx.Client(headers=headers, timeout=120) as http:
        http.request(method, target, json=body)  # warm-up
        before = cpu_seconds(pid)
        for n in range(replies):
            if name == "ai-sdk":
                body["id"] = f"c{n}"  # a new chat each time, as the other routes start one
                body["messages"][0]["id"] = f"u{n}"  # and a new message: the same one again is a retry
            if name == "ag-ui":
                body["threadId"], body["runId"] = f"t{n}", f"r{n}"  # a new thread; the same run again is a retry
            response = http.request(method, target, json=body)
            events += response.content.count(TEXT_MARKER[name])
        spent = cpu_seconds(pid) - before
    return {"route": name, "text_events": events, "server_cpu_us_per_event": round(spent / events * 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replies", type=int, default=20)
    parser.add_argument("--words", type=int, default=2000)
    args = parser.parse_args()
    with running_server() as (url, process):
        results = [measure(url, process.pid, name, args.replies, args.words) for name in ROUTES]
    base = results[0]["server_cpu_us_per_event"]
    for result in results:
        result["vs_plain_sse"] = round(result["server_cpu_us_per_event"] / base, 2)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
