"""What a protocol translator costs: server CPU per text event of the same long reply streamed
over the plain SSE route, the AI SDK route, the AG-UI route and ChatKit, one reply after another,
in one run.

    .venv/bin/python -m bench.translators [--replies 20] [--words 2000]
"""

from __future__ import annotations

import argparse
import json

import httpx

from bench.procstat import cpu_seconds
from bench.server import running_server, token


TEXT_MARKER = {
    "sse": b'"type":"text"', "ai-sdk": b'"type":"text-delta"', "ag-ui": b'"type":"TEXT_MESSAGE_CONTENT"',
    "chatkit": b'"type":"assistant_message.content_part.text_delta"',
}


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


def measure(url: str, pid: int, name: str, replies: int, words: int) -> dict:
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
        results = [measure(url, process.pid, name, args.replies, args.words)
                   for name in ("sse", "ai-sdk", "ag-ui", "chatkit")]
    base = results[0]["server_cpu_us_per_event"]
    for result in results:
        result["vs_plain_sse"] = round(result["server_cpu_us_per_event"] / base, 2)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
