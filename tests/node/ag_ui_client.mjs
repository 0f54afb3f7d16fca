// AG-UI's own client against a live server: HttpAgent.runAgent, whose pipeline validates every
// event against the protocol's schema (enforceEvents) and checks their order (verifyEvents)
// before any subscriber sees it; a violation rejects runAgent. Prints one JSON line of results.
//   node ag_ui_client.mjs <base url> <token> send|abort <thread id> <text> [run id]
import { HttpAgent } from "@ag-ui/client";

const [, , base, token, mode, threadId, text, runId] = process.argv;
const user = JSON.parse(Buffer.from(token.split(".")[1], "base64url")).sub;
const agent = new HttpAgent({
  url: `${base}/api/${user}/ag-ui`,
  headers: { Authorization: `Bearer ${token}` },
  threadId,
});
agent.addMessage({ id: `u-${Date.now()}`, role: "user", content: text });

const events = [];
const errors = [];
let outcome = null;
try {
  await agent.runAgent(runId ? { runId } : {}, {
    onEvent: ({ event }) => {
      events.push(event);
      // Stop: the UI's stop button aborts the request once the first words arrived.
      if (mode === "abort" && event.type === "TEXT_MESSAGE_CONTENT") agent.abortRun();
    },
    onRunFinishedEvent: (params) => { outcome = params.outcome; },
  });
} catch (error) {
  errors.push(String(error));
}
const reply = agent.messages.filter((m) => m.role === "assistant").map((m) => m.content ?? "").join("");
console.log(JSON.stringify({ events, errors, outcome, reply, messages: agent.messages }));
