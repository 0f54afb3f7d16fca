// AG-UI's own client against a live server: HttpAgent.runAgent, whose pipeline validates every
// event against the protocol's schema (enforceEvents) and checks their order (verifyEvents)
// before any subscriber sees it; a violation rejects runAgent. Prints one JSON line of results.
//   node ag_ui_client.mjs <base url> <token> send|abort|cancel|resume <thread id> <text> [run id]
//                         [approve|reject|cancel [reason]]
// abort: the client aborts its request (Stop); cancel: the run is stopped from elsewhere
// (POST …/runs/{id}/cancel, the id from RUN_STARTED's metadata) while the client reads on.
// resume: a run that ends interrupted is answered by a second run, as an application does:
// buildResumeArray over the agent's pendingInterrupts (resolved with {approve, reason}, or
// cancelled); its results are under "resumed".
import { HttpAgent, buildResumeArray } from "@ag-ui/client";

const [, , base, token, mode, threadId, text, runId, decision, reason] = process.argv;
const user = JSON.parse(Buffer.from(token.split(".")[1], "base64url")).sub;
const agent = new HttpAgent({
  url: `${base}/api/${user}/ag-ui`,
  headers: { Authorization: `Bearer ${token}` },
  threadId,
});
agent.addMessage({ id: `u-${Date.now()}`, role: "user", content: text });

let events = [];
let errors = [];
let outcome = null;
let interrupts = null;
let stopped = false;
try {
  await agent.runAgent(runId ? { runId } : {}, {
    onEvent: ({ event }) => {
      events.push(event);
      // Stopped once the first words arrived, as a user presses Stop.
      if (event.type === "TEXT_MESSAGE_CONTENT" && !stopped) {
        stopped = true;
        if (mode === "abort") agent.abortRun();
        if (mode === "cancel") {
          const run = events[0].metadata.serverRunId;
          fetch(`${base}/api/${user}/runs/${run}/cancel`, { method: "POST", headers: agent.headers });
        }
      }
    },
    onRunFinishedEvent: (params) => { outcome = params.outcome; interrupts = params.interrupts ?? null; },
  });
} catch (error) {
  errors.push(String(error));
}
const results = () => ({
  events, errors, outcome, interrupts, messages: structuredClone(agent.messages),
  reply: agent.messages.filter((m) => m.role === "assistant").map((m) => m.content ?? "").join(""),
});
const first = results();
if (mode === "resume" && agent.pendingInterrupts.length > 0) {
  const answer = decision === "cancel"
    ? { status: "cancelled" }
    : { status: "resolved", payload: { approve: decision === "approve", ...(reason ? { reason } : {}) } };
  const resume = buildResumeArray(agent.pendingInterrupts,
    Object.fromEntries(agent.pendingInterrupts.map((interrupt) => [interrupt.id, answer])));
  [events, errors, outcome, interrupts] = [[], [], null, null];
  try {
    await agent.runAgent({ resume }, {
      onEvent: ({ event }) => { events.push(event); },
      onRunFinishedEvent: (params) => { outcome = params.outcome; },
    });
  } catch (error) {
    errors.push(String(error));
  }
  first.resumed = { ...results(), pendingInterrupts: agent.pendingInterrupts };
}
console.log(JSON.stringify(first));
