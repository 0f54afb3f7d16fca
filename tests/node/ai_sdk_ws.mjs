// The AI SDK's WebSocketChatTransport (on the `ws` package) against a live server: it checks
// every frame's sequence and validates every chunk against the SDK's schema. Prints one JSON line.
//   node ai_sdk_ws.mjs <base url> <token> send|abort|drop-and-resume|resume|two-chats <chat id> [text]
//   AUTH=query puts the token in ?token= instead of each frame's Authorization header.
import { WebSocketChatTransport, readUIMessageStream } from "ai";
import WebSocket from "ws";

const [, , base, token, mode, chatId, text = ""] = process.argv;
const user = JSON.parse(Buffer.from(token.split(".")[1], "base64url")).sub;

function transport() {
  const url = `${base.replace(/^http/, "ws")}/api/${user}/ai-sdk/ws`;
  return process.env.AUTH === "query"
    ? new WebSocketChatTransport({ url, webSocket: WebSocket, params: { token } })
    : new WebSocketChatTransport({ url, webSocket: WebSocket, headers: { Authorization: `Bearer ${token}` } });
}

const said = (words, id = chatId) => ({ id: `m-${id}-${Date.now()}`, role: "user", parts: [{ type: "text", text: words }] });
const send = (t, id, words, abortSignal) => t.sendMessages({
  chatId: id, messages: [said(words, id)], trigger: "submit-message", messageId: undefined, abortSignal,
});

async function lastMessage(stream) {
  let last = null;
  const errors = [];
  for await (const message of readUIMessageStream({ stream, onError: (e) => errors.push(String(e)) })) last = message;
  return { message: last, errors };
}

async function readUntilText(stream) {
  const reader = stream.getReader();
  const chunks = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
    if (value.type === "text-delta") break;
  }
  return { reader, chunks };
}

let result;
const t = transport();
if (mode === "send") {
  result = await lastMessage(await send(t, chatId, text));
} else if (mode === "abort") {
  // Stop: useChat's stop() aborts the request's signal once the first words arrived.
  const controller = new AbortController();
  const { reader, chunks } = await readUntilText(await send(t, chatId, text, controller.signal));
  controller.abort();
  const rest = await reader.read();
  // Frames go out in order: once the server answers a resume, it has read the abort.
  const after = await t.reconnectToStream({ chatId });
  result = { chunks, afterAbort: rest.done, resumed: after === null ? null : await lastMessage(after) };
} else if (mode === "drop-and-resume") {
  // The socket drops mid-reply (not Stop); a new transport resumes the chat: a full replay.
  const { chunks } = await readUntilText(await send(t, chatId, text));
  t.close();
  const stream = await transport().reconnectToStream({ chatId });
  result = { before: chunks.length, resumed: stream === null ? null : await lastMessage(stream) };
} else if (mode === "resume") {
  const stream = await t.reconnectToStream({ chatId });
  result = stream === null ? { none: true } : await lastMessage(stream);
} else if (mode === "two-chats") {
  // Two replies multiplexed on one socket, each its own request.
  const [a, b] = await Promise.all([send(t, `${chatId}-a`, text), send(t, `${chatId}-b`, text)]);
  result = { a: await lastMessage(a), b: await lastMessage(b) };
} else if (mode === "error") {
  try {
    result = await lastMessage(await send(t, chatId, text));
  } catch (error) {
    result = { thrown: String(error) };
  }
}
t.close();
console.log(JSON.stringify(result));
process.exit(0);
