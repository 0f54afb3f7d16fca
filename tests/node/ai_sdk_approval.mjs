// Tool approval through the AI SDK's own Chat (`@ai-sdk/react`'s Chat: AbstractChat with its
// plain state, no rendering): the reply asks for approval, addToolApprovalResponse answers it
// and sendAutomaticallyWhen (lastAssistantMessageIsCompleteWithApprovalResponses) sends the
// answer in the next request, as useChat does. Prints one JSON line of results.
//   node ai_sdk_approval.mjs <base url> <token> sse|ws <chat id> approve|reject [reason]
import { Chat } from "@ai-sdk/react";
import { DefaultChatTransport, WebSocketChatTransport, lastAssistantMessageIsCompleteWithApprovalResponses } from "ai";
import WebSocket from "ws";

const [, , base, token, kind, chatId, decision, reason] = process.argv;
const user = JSON.parse(Buffer.from(token.split(".")[1], "base64url")).sub;
const headers = { Authorization: `Bearer ${token}` };
const bodies = []; // what the SDK sent, so a test can send one again
const transport = kind === "ws"
  ? new WebSocketChatTransport({ url: `${base.replace(/^http/, "ws")}/api/${user}/ai-sdk/ws`, webSocket: WebSocket, headers })
  : new DefaultChatTransport({
    api: `${base}/api/${user}/ai-sdk/chat`,
    headers,
    fetch: (url, init) => { bodies.push(JSON.parse(init.body)); return fetch(url, init); },
  });

const errors = [];
let finished = () => {};
const chat = new Chat({
  id: chatId,
  transport,
  sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses,
  onError: (error) => errors.push(String(error)),
  onFinish: ({ message }) => finished(message),
});

await chat.sendMessage({ text: "add buy milk" });
await chat.sendMessage({ text: "delete buy milk" });
const asked = structuredClone(chat.messages.at(-1));
const part = asked.parts.find((p) => p.state === "approval-requested");
const answered = new Promise((resolve) => { finished = resolve; });
if (part) {
  await chat.addToolApprovalResponse({ id: part.approval.id, approved: decision === "approve", reason });
  await answered;
}
if (kind === "ws") transport.close();
console.log(JSON.stringify({ asked, messages: chat.messages, status: chat.status, errors, bodies }));
process.exit(0);
