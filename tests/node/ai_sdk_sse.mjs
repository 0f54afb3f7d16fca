// The AI SDK's own client against a live server: DefaultChatTransport (which validates every
// chunk against the SDK's schema) and readUIMessageStream. Prints one JSON line of results.
//   node ai_sdk_sse.mjs <base url> <token> send|abort|resume|regenerate <chat id> [text]
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [, , base, token, mode, chatId, text = ""] = process.argv;
const user = JSON.parse(Buffer.from(token.split(".")[1], "base64url")).sub;
const transport = new DefaultChatTransport({
  api: `${base}/api/${user}/ai-sdk/chat`,
  headers: { Authorization: `Bearer ${token}` },
});
const said = { id: `m-${Date.now()}`, role: "user", parts: [{ type: "text", text }] };

async function lastMessage(stream) {
  let last = null;
  const errors = [];
  for await (const message of readUIMessageStream({ stream, onError: (e) => errors.push(String(e)) })) {
    last = message;
  }
  return { message: last, errors };
}

let result;
if (mode === "send" || mode === "regenerate") {
  const stream = await transport.sendMessages({
    chatId, messages: [said], trigger: mode === "send" ? "submit-message" : "regenerate-message",
    messageId: undefined, abortSignal: undefined,
  });
  result = await lastMessage(stream);
} else if (mode === "abort") {
  // Stop: the SDK's stop() aborts the fetch once the first words arrived.
  const controller = new AbortController();
  const stream = await transport.sendMessages({
    chatId, messages: [said], trigger: "submit-message", messageId: undefined, abortSignal: controller.signal,
  });
  const chunks = [];
  try {
    for await (const chunk of stream) {
      chunks.push(chunk);
      if (chunk.type === "text-delta") controller.abort();
    }
  } catch (error) {
    chunks.push({ aborted: error.name });
  }
  result = { chunks };
} else if (mode === "resume") {
  const stream = await transport.reconnectToStream({ chatId });
  result = stream === null ? { none: true } : await lastMessage(stream);
}
console.log(JSON.stringify(result));
