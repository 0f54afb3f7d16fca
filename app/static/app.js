// The chat page: plain browser JavaScript, no build step (works offline). Replies are markdown,
// rendered by marked and cleaned by DOMPurify, both served from /static/vendor/.
//
// One reply is written at a time. Its state (run id, last seq seen, what has been shown) is kept
// in sessionStorage on every event, so a reload re-attaches to it: the saved part is redrawn and
// the rest is asked for with Last-Event-ID (SSE) or a `resume` frame (WebSocket).
"use strict";

const $ = (id) => document.getElementById(id);

// The sign-in is shared by the user's tabs (localStorage: a new tab is signed in too); what a
// tab shows and the reply it follows are its own (sessionStorage), so two tabs never fight.
const storageOf = (key) => (key === "token" ? localStorage : sessionStorage);

const store = {
  get(key) {
    try { return JSON.parse(storageOf(key).getItem(`chat.${key}`)); } catch { return null; }
  },
  set(key, value) {
    if (value === null || value === undefined) storageOf(key).removeItem(`chat.${key}`);
    else storageOf(key).setItem(`chat.${key}`, JSON.stringify(value));
  },
};

const state = {
  token: null,
  user: null,
  transport: store.get("transport") === "ws" ? "ws" : "sse",
  conversationId: null,
  reply: null, // the reply being written, see newReply()
  lastRunId: null, // of the last reply this tab followed to its end
  loaded: false, // the user's conversation is on screen: sending before would mix two
  detached: new Map(), // conversation id -> run id of a reply left running to show another conversation
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A wait before reconnecting ends early when the browser says the network is back.
let wakeOnline = [];
const napUntilOnline = (ms) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  wakeOnline.push(() => { clearTimeout(timer); resolve(); });
});

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---- errors and the banner ------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const UNREACHABLE = "The server cannot be reached. Is it running?";

async function errorOf(response) {
  let body = {};
  try { body = await response.json(); } catch { /* not JSON: keep the status line */ }
  const detail = body.detail || response.statusText || `HTTP ${response.status}`;
  const code = (body.extra && body.extra.code) || `http_${response.status}`;
  if (response.status === 401) {
    return new ApiError(401, "unauthorized", `Your sign-in has expired or is not valid (${detail}) Sign in again.`);
  }
  if (response.status === 429) {
    const retry = response.headers.get("Retry-After");
    return new ApiError(429, code, retry ? `${detail} (try again in ${retry} s)` : detail);
  }
  return new ApiError(response.status, code, detail);
}

let bannerKind = null;

function banner(message, kind = "error") {
  bannerKind = kind;
  $("banner-text").textContent = message;
  $("banner").hidden = false;
}

function hideBanner(kind) {
  if (kind && kind !== bannerKind) return;
  $("banner").hidden = true;
  bannerKind = null;
}

function showError(error) {
  if (error.name === "AbortError") return;
  banner(error.message || String(error), error.code === "unreachable" ? "unreachable" : "error");
  if (error.status === 401) signOut({ keepBanner: true });
}

// ---- HTTP -----------------------------------------------------------------------------------

async function request(method, path, { body, headers = {}, signal } = {}) {
  let response;
  try {
    response = await fetch(`/api/${encodeURIComponent(state.user)}${path}`, {
      method,
      signal,
      headers: {
        Authorization: `Bearer ${state.token}`,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "unreachable", UNREACHABLE);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

async function api(method, path, body) {
  const response = await request(method, path, { body });
  return response.status === 204 ? null : response.json();
}

// Plain SSE frames are `data: <json>\n\n`; resumed ones also carry an `id:` line.
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "unreachable", UNREACHABLE);
    }
    if (chunk.done) return;
    buffer += chunk.value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\n")) {
        if (line.startsWith("data: ")) onEvent(JSON.parse(line.slice(6)));
      }
    }
  }
}

// ---- transports -----------------------------------------------------------------------------

const sse = {
  // The page asks for on_disconnect "continue": a reload (or a closed tab) must not stop the
  // reply, so the page can re-attach to it afterwards. Stop is therefore explicit, with
  // POST /runs/{id}/cancel, and the stream then ends with done{status: "cancelled"}.
  async chat(reply, message) {
    const response = await request("POST", "/chat/stream", {
      body: { message, conversation_id: reply.conversationId, on_disconnect: "continue", again: reply.again },
      signal: reply.abort.signal,
    });
    await readEvents(response, (event) => onEvent(reply, event));
  },

  async resume(reply) {
    const response = await request("GET", `/runs/${encodeURIComponent(reply.runId)}/events`, {
      headers: { "Last-Event-ID": String(reply.seq) },
      signal: reply.abort.signal,
    });
    await readEvents(response, (event) => onEvent(reply, event));
  },

  async cancel(reply) {
    await api("POST", `/runs/${encodeURIComponent(reply.runId)}/cancel`);
  },

  // The answer streams the continuation, or is 202 while other calls of that run still wait.
  async decide(reply, runId, callId, approve) {
    const response = await request("POST", `/runs/${encodeURIComponent(runId)}/approvals`, {
      body: { call_id: callId, approve, on_disconnect: "continue" },
      signal: reply.abort.signal,
    });
    if (response.status === 202) return waiting(reply);
    await readEvents(response, (event) => onEvent(reply, event));
  },
};

// Runs one SSE request for a reply; if the connection breaks before `done`, resumes with backoff.
async function followSSE(reply, first) {
  let step = first;
  for (let attempt = 0; ; attempt++) {
    try {
      await step();
      if (reply.finished) {
        hideBanner("connection");
        return;
      }
    } catch (error) {
      if (error.name === "AbortError" || reply !== state.reply) return;
      if (!reply.runId) return refused(reply, error);
      if (error.status) {
        finishReply(reply, "failed");
        return showError(error);
      }
    }
    if (reply !== state.reply || reply.finished) return;
    if (attempt >= 6) {
      banner("The server is gone and the reply could not be finished. Reload the page to try again.", "connection");
      return;
    }
    const delay = Math.min(8000, 500 * 2 ** attempt);
    banner(`The connection was lost; re-attaching in ${delay / 1000} s…`, "connection");
    await napUntilOnline(delay);
    step = () => sse.resume(reply);
  }
}

const ws = {
  socket: null,
  ready: false,
  wanted: false,
  attempt: 0,
  timer: null,
  queue: [],

  open() {
    this.wanted = true;
    if (!this.socket && !this.timer) this.connect();
  },

  close() {
    this.wanted = false;
    clearTimeout(this.timer);
    this.timer = null;
    this.queue = [];
    const socket = this.socket;
    this.socket = null;
    this.ready = false;
    if (socket) socket.close(1000);
    setConnection("");
  },

  connect() {
    this.timer = null;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/api/${encodeURIComponent(state.user)}/ws`);
    this.socket = socket;
    setConnection("connecting");
    socket.onopen = () => {
      // The token goes in the first frame, never in the URL: URLs end up in logs.
      socket.send(JSON.stringify({ type: "auth", token: state.token }));
      this.ready = true;
      this.attempt = 0;
      setConnection("open");
      hideBanner("connection");
      const reply = state.reply;
      if (reply && reply.runId && !reply.finished && reply.transport === "ws") {
        socket.send(JSON.stringify({ type: "resume", run_id: reply.runId, after: reply.seq }));
      }
      for (const frame of this.queue.splice(0)) socket.send(JSON.stringify(frame));
    };
    socket.onmessage = (message) => onFrame(JSON.parse(message.data));
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.ready = false;
      if (event.code === 1008) {
        this.wanted = false;
        setConnection("closed");
        banner(`Signed out: ${event.reason || "the token was refused"}`);
        signOut({ keepBanner: true });
        return;
      }
      if (!this.wanted) return;
      setConnection("closed");
      const delay = Math.min(10000, 500 * 2 ** this.attempt++);
      banner(`The connection to the server was lost; reconnecting in ${(delay / 1000).toFixed(1)} s…`, "connection");
      this.timer = setTimeout(() => this.connect(), delay);
    };
  },

  send(frame) {
    if (this.ready) this.socket.send(JSON.stringify(frame));
    else {
      this.queue.push(frame);
      this.open();
    }
  },

  chat(reply, message) {
    this.send({ type: "chat", message, conversation_id: reply.conversationId, again: reply.again });
  },

  resume(reply) {
    // Sent on open for the reply being written, so a closed socket only needs opening.
    if (this.ready) this.send({ type: "resume", run_id: reply.runId, after: reply.seq });
    else this.open();
  },

  async cancel(reply) {
    this.send({ type: "cancel", run_id: reply.runId });
  },

  decide(reply, runId, callId, approve) {
    this.send({ type: "approval", run_id: runId, call_id: callId, approve });
  },
};

setInterval(() => ws.ready && ws.send({ type: "ping" }), 25000);

// Back online: every wait for a retry ends now, a closed socket reconnects at once, and a
// "cannot be reached" from while offline is over.
function onOnline() {
  for (const wake of wakeOnline.splice(0)) wake();
  if (ws.wanted && !ws.socket) {
    clearTimeout(ws.timer);
    ws.attempt = 0;
    ws.connect();
  }
  hideBanner("unreachable");
  if (bannerKind === "offline") hideBanner("offline");
}

function onOffline() {
  banner("You are offline. The page reconnects as soon as the network is back.", "offline");
}

function onFrame(frame) {
  const reply = state.reply;
  if (frame.type === "pong") return;
  if (frame.type === "approval_waiting") return reply && !reply.runId && waiting(reply);
  if (frame.type === "error" && frame.seq === undefined) {
    // A refused frame, not a run's error event.
    if (frame.code === "run_finished") return; // a Stop that came too late: `done` is on its way
    const error = new ApiError(400, frame.code, frame.message);
    if (reply && !reply.runId && !frame.run_id) return refused(reply, error);
    if (reply && frame.run_id === reply.runId) finishReply(reply, "failed");
    return showError(error);
  }
  if (reply && (frame.run_id === reply.runId || (!reply.runId && frame.type === "start"))) {
    onEvent(reply, frame);
  }
}

function setConnection(status) {
  const labels = { open: "connected", connecting: "connecting…", closed: "offline" };
  const node = $("connection");
  node.dataset.state = status;
  node.textContent = labels[status] || "";
}

// ---- rendering ------------------------------------------------------------------------------

const messages = () => $("messages");

// Follows the reply while the user stays at the bottom; any move up (wheel, PageUp, arrow keys,
// touch, the scrollbar) stops following at once, and "Jump to latest" brings the reader back.
// A smooth wheel scroll starts with small steps: deciding by distance from the bottom let the
// next token snap it back, so the direction of the move decides.
const follow = { on: true, userAt: -Infinity, lastTop: 0, touchY: null };

function setFollow(on) {
  follow.on = on;
  $("jump").hidden = on;
}

function scrollDown(force) {
  const box = messages();
  if (force) setFollow(true);
  if (follow.on) box.scrollTop = box.scrollHeight;
  follow.lastTop = box.scrollTop;
}

function onMessagesScroll() {
  const box = messages();
  const top = box.scrollTop;
  const up = top < follow.lastTop - 1;
  follow.lastTop = top;
  if (up && performance.now() - follow.userAt < 1000) setFollow(false);
  else if (!up && box.scrollHeight - top - box.clientHeight < 4) setFollow(true);
}

function onUserScrolls(event) {
  follow.userAt = performance.now();
  const upward = (event.type === "wheel" && event.deltaY < 0)
    || (event.type === "keydown" && ["PageUp", "ArrowUp", "Home"].includes(event.key))
    || (event.type === "touchmove" && follow.touchY !== null && event.touches[0].clientY > follow.touchY);
  if (event.type === "touchmove") follow.touchY = event.touches[0].clientY;
  if (upward && messages().scrollHeight > messages().clientHeight) setFollow(false);
}

function jumpToLatest() {
  scrollDown(true);
  messages().focus({ preventScroll: true });
}

function clearMessages() {
  messages().replaceChildren($("empty") || el("p", "empty"));
  $("empty").hidden = false;
  setFollow(true);
}

function timeOf(iso) {
  const at = iso ? new Date(iso) : new Date();
  const node = el("time", "time", at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  node.dateTime = at.toISOString();
  node.title = at.toLocaleString();
  return node;
}

function actionButton(label, className, onClick, ariaLabel) {
  const button = el("button", `action ${className}`, label);
  button.type = "button";
  if (ariaLabel) button.setAttribute("aria-label", ariaLabel);
  button.addEventListener("click", onClick);
  return button;
}

// Each message is a turn a screen reader can jump to, named for who spoke.
function turnNode(className, label) {
  const node = el("div", className);
  node.setAttribute("role", "article");
  node.setAttribute("aria-label", label);
  return node;
}

function appendUser(text, { id, at } = {}) {
  $("empty").hidden = true;
  const node = turnNode("msg user", "You said");
  if (id) node.dataset.id = id;
  const meta = el("div", "meta");
  meta.append(timeOf(at), actionButton("Edit", "edit", () => editMessage(node), "Edit and resend"));
  node.append(el("div", "bubble", text), meta);
  messages().append(node);
  scrollDown(true);
  return node;
}

const STATUS_LABELS = { cancelled: "Stopped", interrupted: "Interrupted", failed: "Failed" };

// ---- markdown: the model's words as formatting, never as markup -----------------------------

const escapeHtml = (text) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

let markdownReady = false;

// Markdown lets only a list starting at 1 interrupt a paragraph; a reply listing pending tasks
// 2 and 5 right under "You have 2 pending tasks:" is a list too. Code blocks are left alone.
function listsAfterText(source) {
  const lines = source.split("\n");
  const out = [];
  let code = false;
  for (const line of lines) {
    if (/^\s*(```|~~~)/.test(line)) code = !code;
    const previous = out[out.length - 1];
    if (!code && /^\d+[.)]\s/.test(line) && previous && previous.trim() && !/^\s*(\d+[.)]|[-*+])\s/.test(previous)) {
      out.push("");
    }
    out.push(line);
  }
  return out.join("\n");
}

const markdownRenderer = {
  // HTML written by the model (or inside a task title it repeats) is shown as the text it is.
  html: ({ text }) => escapeHtml(text),
  // "[x]" items: the marks the task panel uses, not form controls.
  checkbox: ({ checked }) => (checked ? "✓ " : "○ "),
  // A numbered list keeps its numbers (a task's number, even in a filtered list).
  list(token) {
    if (!token.ordered) return false;
    let body = "";
    for (const item of token.items) {
      const number = /^\s*(\d+)[.)]/.exec(item.raw);
      body += this.listitem(item).replace(/^<li>/, number ? `<li value="${Number(number[1])}">` : "<li>");
    }
    return `<ol>\n${body}</ol>\n`;
  },
};

function renderMarkdown(source) {
  if (!markdownReady) {
    marked.use({ gfm: true, breaks: true, renderer: markdownRenderer });
    DOMPurify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A") {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer");
      }
    });
    markdownReady = true;
  }
  // DOMPurify is the second wall: whatever marked lets through, nothing that runs survives.
  return DOMPurify.sanitize(marked.parse(listsAfterText(source), { async: false }), {
    FORBID_TAGS: ["img", "style", "form", "input", "button", "iframe"],
    FORBID_ATTR: ["style"],
  });
}

// ---- tool calls in words --------------------------------------------------------------------

const quoted = (text) => `“${text}”`;

function taskName(args) {
  return args && args.title ? quoted(args.title) : "a task";
}

// A call the user said no to (Reject, or a new message sent instead of deciding) comes back
// with the server's words for the model (domain/approvals.py `declined`): it never ran.
const DECLINED = "The user declined this tool call";

function isDeclined(result) {
  const said = result && typeof result === "object" ? result.error : result;
  return typeof said === "string" && said.startsWith(DECLINED);
}

const NOT_DONE = { add_task: "added", list_tasks: "listed", complete_task: "completed", update_task: "updated",
  delete_task: "deleted" };

// One line for a call: what is being done, then what was done.
function toolSummary(name, args, result) {
  args = args || {};
  if (isDeclined(result)) {
    const what = name === "list_tasks" ? "Your tasks were" : `${args.title ? quoted(args.title) : "The task"} was`;
    return NOT_DONE[name] ? `Declined: ${what} not ${NOT_DONE[name]}` : `Declined: ${name} did not run`;
  }
  if (result === undefined) {
    const running = {
      add_task: `Adding ${taskName(args)}…`,
      list_tasks: "Looking at your tasks…",
      complete_task: args.completed === false ? `Reopening ${taskName(args)}…` : `Completing ${taskName(args)}…`,
      update_task: `Updating ${taskName(args)}…`,
      delete_task: `Deleting ${taskName(args)}…`,
    };
    return running[name] || `Running ${name}…`;
  }
  if (result && typeof result === "object") {
    if (result.error) return `Could not ${name.replace(/_/g, " ")}: ${result.error}`;
    if (result.added) return `Added task ${quoted(result.added.title)}`;
    if (Array.isArray(result.tasks)) {
      const kind = { pending: "pending ", completed: "completed " }[result.status] || "";
      const count = result.tasks.length;
      return `Listed ${count} ${kind}${count === 1 ? "task" : "tasks"}`;
    }
    if (result.deleted) return `Deleted task ${quoted(result.deleted.title)}`;
    if (result.updated) {
      const task = result.updated;
      if (name === "complete_task") return `${task.completed ? "Completed" : "Reopened"} ${quoted(task.title)}`;
      return args.new_title ? `Renamed a task to ${quoted(task.title)}` : `Updated ${quoted(task.title)}`;
    }
  }
  return `Ran ${name}`;
}

function taskLine(task) {
  const line = el("li", task.completed ? "done" : "");
  line.append(el("span", "check", task.completed ? "✓ " : "○ "), el("span", "", task.title));
  if (task.description) line.append(el("span", "muted-inline", ` — ${task.description}`));
  return line;
}

const ARGUMENT_LABELS = { title: "Task", new_title: "New title", description: "Description", status: "Which",
  completed: "Done" };

// The details under the summary: what was asked and what came back, in words (no ids, no
// timestamps, no nulls), with the tool's name for the curious.
function toolDetails(name, args, result) {
  const body = el("div", "tool-details");
  const asked = el("dl", "tool-args");
  for (const [key, value] of Object.entries(args || {})) {
    if (value === null || value === undefined || key === "task_id") continue;
    asked.append(el("dt", "", ARGUMENT_LABELS[key] || key),
      el("dd", "", typeof value === "boolean" ? (value ? "yes" : "no") : String(value)));
  }
  const tool = el("p", "tool-name-line", "Tool: ");
  tool.append(el("code", "tool-name", name));
  body.append(tool);
  if (asked.children.length) body.append(asked);
  const outcome = el("div", "tool-result");
  if (result === undefined) outcome.textContent = "Running…";
  else if (isDeclined(result)) outcome.textContent = "You declined this call; it did not run.";
  else if (result && typeof result === "object" && result.error) outcome.textContent = String(result.error);
  else if (result && typeof result === "object" && Array.isArray(result.tasks)) {
    if (!result.tasks.length) outcome.textContent = "No tasks.";
    else {
      const list = el("ol", "tool-tasks");
      list.append(...result.tasks.map(taskLine));
      outcome.append(list);
    }
  } else if (result && typeof result === "object" && (result.added || result.updated || result.deleted)) {
    const task = result.added || result.updated || result.deleted;
    const list = el("ul", "tool-tasks");
    list.append(taskLine(task));
    outcome.append(list);
  } else {
    outcome.textContent = typeof result === "string" ? result : JSON.stringify(result);
  }
  body.append(outcome);
  return body;
}

// One assistant reply: tool cards and text, in the order they came.
class Turn {
  constructor(live, { at, runId } = {}) {
    $("empty").hidden = true;
    this.node = turnNode(live ? "msg assistant streaming" : "msg assistant", "Assistant said");
    if (runId) this.node.dataset.runId = runId;
    this.bubble = null;
    this.cards = new Map();
    this.finished = false;
    this.at = at;
    if (live) {
      // Between Send and the first word: the user sees the reply is on its way.
      this.pending = el("div", "thinking");
      this.pending.append(el("span", "dot"), el("span", "dot"), el("span", "dot"), el("span", "visually-hidden", "Working…"));
      this.node.append(this.pending);
    }
    messages().append(this.node);
  }

  place(node) {
    if (this.pending) {
      this.pending.remove();
      this.pending = null;
    }
    this.node.append(node);
  }

  text(content) {
    if (!content) return;
    if (!this.bubble) {
      this.bubble = el("div", "bubble markdown");
      this.bubble.source = "";
      this.place(this.bubble);
    }
    this.bubble.source += content;
    this.bubble.innerHTML = renderMarkdown(this.bubble.source);
    scrollDown();
  }

  tool({ call_id, name, arguments: args }) {
    // A call decided on its card is answered by the reply that follows: one line for it.
    const shown = callCard(call_id);
    if (shown) {
      this.cards.set(call_id, shown);
      return;
    }
    const card = el("details", "tool");
    card.dataset.callId = call_id;
    card.call = { name, args };
    card.append(el("summary", "tool-summary", toolSummary(name, args)), toolDetails(name, args));
    this.cards.set(call_id, card);
    this.place(card);
    this.bubble = null;
    scrollDown();
  }

  result({ call_id, result }) {
    const card = this.cards.get(call_id) || callCard(call_id);
    if (!card) return;
    showResult(card, result);
    scrollDown();
  }

  // A call waiting for the user's yes: the question in words and two buttons; once decided,
  // the decision instead. Redrawn from the conversation after a reload.
  approval({ run_id, call_id, description, decision, reason, created_at, decided_at }) {
    const card = el("div", "approval");
    card.dataset.callId = call_id;
    if (created_at && !this.at) this.at = created_at; // a reply that only asked: it asked then
    card.append(el("p", "approval-question", `${description || "Run this tool"}?`));
    if (decision) card.append(...decisionLine(decision, reason, decided_at));
    else {
      const buttons = el("div", "approval-buttons");
      for (const [label, approve, kind] of [["Approve", true, "primary"], ["Reject", false, "ghost"]]) {
        const button = el("button", kind, label);
        button.type = "button";
        button.addEventListener("click", () => decide(card, run_id, call_id, approve));
        buttons.append(button);
      }
      card.append(buttons);
    }
    this.place(card);
    scrollDown();
    return card;
  }

  finish(status, error) {
    this.finished = true;
    if (this.pending) {
      this.pending.remove();
      this.pending = null;
    }
    this.node.classList.remove("streaming");
    this.node.dataset.status = status;
    if (error) this.node.append(el("div", "bubble error", error));
    const meta = el("div", "meta");
    if (STATUS_LABELS[status]) meta.append(el("span", `badge ${status}`, STATUS_LABELS[status]));
    meta.append(timeOf(this.at));
    if (this.node.querySelector(".bubble.markdown")) {
      meta.append(actionButton("Copy", "copy", (event) => copyReply(this.node, event.currentTarget), "Copy reply"));
    }
    meta.append(actionButton("Regenerate", "regenerate", () => regenerate(this.node), "Regenerate reply"));
    this.node.append(meta);
    scrollDown();
  }
}

function callCard(callId) {
  return messages().querySelector(`.tool[data-call-id="${CSS.escape(callId)}"]`);
}

function showResult(card, result) {
  const { name, args } = card.call;
  const declined = isDeclined(result);
  card.querySelector(".tool-summary").textContent = toolSummary(name, args, result);
  card.querySelector(".tool-details").replaceWith(toolDetails(name, args, result));
  card.classList.toggle("declined", declined);
  card.classList.toggle("failed", !declined && Boolean(result && result.error));
}

// Declined on the page before the server's answer comes: its card and its tool line say so.
function showDeclined(callId) {
  const card = callCard(callId);
  if (card && !card.classList.contains("declined")) showResult(card, DECLINED);
}

// What the reply said, as written (markdown), for the clipboard.
async function copyReply(node, button) {
  const text = [...node.querySelectorAll(".bubble.markdown")].map((bubble) => bubble.source).join("\n\n");
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

function renderMessages(list, approvals = []) {
  clearMessages();
  const turns = new Map();
  const asked = new Set(approvals.map((approval) => approval.run_id));
  const turnOf = (runId) => {
    let entry = turns.get(runId);
    if (!entry) {
      entry = { turn: new Turn(false, { runId }), status: "completed" };
      turns.set(runId, entry);
    }
    return entry;
  };
  for (const message of list) {
    if (message.role === "user") {
      appendUser(message.content, { id: message.id, at: message.created_at });
      // A reply that stopped at a question may have said nothing: its turn holds the card.
      if (asked.has(message.run_id)) turnOf(message.run_id).status = "awaiting_approval";
      continue;
    }
    const entry = turnOf(message.run_id);
    entry.status = message.status;
    entry.turn.at = message.created_at;
    if (message.role === "tool" && message.tool) {
      entry.turn.tool(message.tool);
      entry.turn.result(message.tool);
    } else if (message.role === "assistant") {
      entry.turn.text(message.content);
    }
  }
  for (const approval of approvals) turnOf(approval.run_id).turn.approval(approval);
  for (const { turn, status } of turns.values()) turn.finish(status);
  scrollDown(true);
}

// The server's reason for a call declined by a newer message (domain/approvals.py SUPERSEDED).
const SUPERSEDED = "they sent a new message instead of deciding";

// The decision, and when it was made (not when the page was drawn).
function decisionLine(decision, reason, at) {
  const when = el("p", "approval-time", "Decided at ");
  when.append(timeOf(at));
  return [el("p", `approval-decision ${decision}`, decisionText(decision, reason)), when];
}

function decisionText(decision, reason) {
  if (decision === "approved") return "Approved";
  if (reason === SUPERSEDED) reason = "you sent a new message instead";
  return reason ? `Declined: ${reason}` : "Declined";
}

// The user's answer to a question on a card: the card shows it, and the continuation (a new
// reply in the same conversation) streams below, once every question of that reply is answered.
function decide(card, runId, callId, approve) {
  if (state.reply || !state.loaded) return;
  for (const button of card.querySelectorAll("button")) button.remove();
  card.append(...decisionLine(approve ? "approved" : "rejected"));
  if (!approve) showDeclined(callId);
  const reply = newReply({ decision: true });
  if (reply.transport === "ws") ws.decide(reply, runId, callId, approve);
  else followSSE(reply, () => sse.decide(reply, runId, callId, approve));
  $("input").focus();
}

// A new message declines the calls still waiting in the conversation (the server does so as it
// stores the message): their cards say so at once, rather than offer buttons that no longer work.
function declineWaiting() {
  for (const card of messages().querySelectorAll(".approval")) {
    const buttons = card.querySelector(".approval-buttons");
    if (!buttons) continue;
    buttons.remove();
    card.append(...decisionLine("rejected", SUPERSEDED));
    showDeclined(card.dataset.callId);
  }
}

// A decision recorded while the reply still waits for others: no continuation yet.
function waiting(reply) {
  reply.finished = true;
  reply.turn.node.remove();
  state.reply = null;
  setBusy(false);
}

// Re-rendering a list keeps the keyboard where it was: the focused control has a stable key.
// A title being edited in place is not redrawn under the user's fingers: the redraw waits.
function keepFocus(list, render) {
  if (list.querySelector(".rename-input")) {
    list.redraw = render;
    return;
  }
  list.redraw = null;
  const key = list.contains(document.activeElement) ? document.activeElement.dataset.key : null;
  render();
  if (key) {
    const again = list.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}

function keyed(node, key) {
  node.dataset.key = key;
  return node;
}

// Two clicks delete: the first turns the button into "Delete?" for three seconds, a state kept
// by key, so a list redrawn in between (the feed told a change) still asks.
const confirming = new Set();

function deleteButton(key, ariaLabel, action) {
  const button = keyed(el("button", "delete", "✕"), key);
  button.type = "button";
  button.setAttribute("aria-label", ariaLabel);
  const ask = (on) => {
    button.classList.toggle("confirm", on);
    button.textContent = on ? "Delete?" : "✕";
  };
  ask(confirming.has(key));
  button.onclick = () => {
    if (!confirming.has(key)) {
      confirming.add(key);
      ask(true);
      setTimeout(() => {
        confirming.delete(key);
        const shown = document.querySelector(`[data-key="${CSS.escape(key)}"]`);
        if (shown) {
          shown.classList.remove("confirm");
          shown.textContent = "✕";
        }
      }, 3000);
      return;
    }
    confirming.delete(key);
    action().catch(showError);
  };
  return button;
}

// A title edited in place: Enter saves, Escape (or leaving the field) puts it back.
function editInPlace(titleNode, current, label, focusKey, save) {
  const input = el("input", "rename-input");
  input.value = current;
  input.setAttribute("aria-label", label);
  let done = false;
  const finish = async (keep) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    if (keep && title && title !== current) {
      try {
        await save(title);
      } catch (error) {
        showError(error);
      }
    }
    const list = input.closest("ul, ol");
    if (input.isConnected) input.replaceWith(titleNode);
    if (list && list.redraw) keepFocus(list, list.redraw);
    const back = document.querySelector(`[data-key="${CSS.escape(focusKey)}"]`);
    if (back) back.focus();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      finish(true);
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(false));
  titleNode.replaceWith(input);
  input.focus();
  input.select();
}

function renderConversations(list) {
  const items = list.map((conversation) => {
    const name = conversation.title || "Untitled";
    const item = el("li");
    item.dataset.id = conversation.id;
    item.classList.toggle("active", conversation.id === state.conversationId);
    item.classList.toggle("running", state.detached.has(conversation.id));
    const title = keyed(el("button", "title", name), `open-${conversation.id}`);
    title.type = "button";
    title.title = conversation.title || "";
    title.onclick = () => switchConversation(conversation.id);
    if (state.detached.has(conversation.id)) title.append(el("span", "visually-hidden", " (replying)"));
    const rename = keyed(el("button", "rename", "✎"), `rename-${conversation.id}`);
    rename.type = "button";
    rename.setAttribute("aria-label", `Rename ${quoted(name)}`);
    rename.onclick = () => editInPlace(title, conversation.title || "", "Conversation title", `rename-${conversation.id}`, async (newTitle) => {
      await api("PATCH", `/conversations/${encodeURIComponent(conversation.id)}`, { title: newTitle });
      title.textContent = newTitle;
      await loadConversations();
    });
    const remove = deleteButton(`delete-${conversation.id}`, `Delete ${quoted(name)}`,
      () => deleteConversation(conversation.id));
    // One Tab stop per conversation (its title); the arrow keys reach its buttons and the others.
    rename.tabIndex = -1;
    remove.tabIndex = -1;
    item.append(title, rename, remove);
    return item;
  });
  keepFocus($("conversations"), () => $("conversations").replaceChildren(...items));
  markActiveConversation();
}

function markActiveConversation() {
  for (const item of $("conversations").children) {
    const active = item.dataset.id === state.conversationId;
    item.classList.toggle("active", active);
    const title = item.querySelector(".title");
    if (title && active) title.setAttribute("aria-current", "page");
    else if (title) title.removeAttribute("aria-current");
  }
  const shown = $("conversations").querySelector("li.active .title");
  $("chat-title").textContent = shown ? shown.textContent : "New chat";
}

// Left/Right move along a conversation's row (title, rename, delete), Up/Down between rows.
function onConversationKeys(event) {
  const row = event.target.closest("li");
  if (!row || !["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"].includes(event.key)) return;
  if (event.target.classList.contains("rename-input")) return;
  event.preventDefault();
  if (event.key === "ArrowUp" || event.key === "ArrowDown") {
    const next = event.key === "ArrowUp" ? row.previousElementSibling : row.nextElementSibling;
    if (next) next.querySelector(".title").focus();
    return;
  }
  const stops = [...row.querySelectorAll("button")];
  const at = stops.indexOf(event.target) + (event.key === "ArrowRight" ? 1 : -1);
  if (at >= 0 && at < stops.length) stops[at].focus();
}

// Numbered as the assistant numbers them (domain/tasks.py: `number`, 1 = oldest), so
// "delete 2" means the task shown as 2 here. The database id is never shown.
function renderTasks(list) {
  const items = list.map((task) => {
    const url = `/tasks/${encodeURIComponent(task.id)}`;
    const item = el("li", task.completed ? "task done" : "task");
    item.dataset.id = task.id;
    const number = el("span", "number", `${task.number}.`);
    number.setAttribute("aria-hidden", "true");
    const check = keyed(el("input", "check"), `check-${task.id}`);
    check.type = "checkbox";
    check.checked = task.completed;
    check.setAttribute("aria-label", `Done: ${task.title}`);
    check.onchange = () => api("PATCH", url, { completed: check.checked }).then(loadTasks).catch((error) => {
      showError(error);
      loadTasks().catch(showError);
    });
    const title = keyed(el("span", "title", task.title), `title-task-${task.id}`);
    if (task.description) title.title = task.description;
    const rename = keyed(el("button", "rename", "✎"), `rename-task-${task.id}`);
    rename.type = "button";
    rename.setAttribute("aria-label", `Rename ${quoted(task.title)}`);
    rename.onclick = () => editInPlace(title, task.title, "Task title", `rename-task-${task.id}`, async (newTitle) => {
      await api("PATCH", url, { title: newTitle });
      await loadTasks();
    });
    const remove = deleteButton(`delete-task-${task.id}`, `Delete ${quoted(task.title)}`, async () => {
      await api("DELETE", url);
      await loadTasks();
    });
    item.append(number, check, title, rename, remove);
    return item;
  });
  keepFocus($("tasks"), () => $("tasks").replaceChildren(...items));
  $("no-tasks").hidden = list.length > 0;
}

// ---- conversations and tasks ----------------------------------------------------------------

// The newest conversations, a page at a time: scrolling the list to its end (or "Show more")
// asks for the next 50, up to the server's largest page (200).
const CONVERSATIONS_PAGE = 50;
const MAX_CONVERSATIONS = 200;
const chats = { limit: CONVERSATIONS_PAGE, full: false, loading: false };

async function loadConversations() {
  const list = await api("GET", `/conversations?limit=${chats.limit}`);
  chats.full = list.length >= chats.limit && chats.limit < MAX_CONVERSATIONS;
  renderConversations(list);
  $("more-chats").hidden = !chats.full;
}

async function loadMoreConversations() {
  if (!chats.full || chats.loading) return;
  chats.loading = true;
  chats.limit = Math.min(MAX_CONVERSATIONS, chats.limit + CONVERSATIONS_PAGE);
  try {
    await loadConversations();
  } finally {
    chats.loading = false;
  }
}

function onSidebarScroll() {
  const box = $("sidebar");
  if (box.scrollHeight - box.scrollTop - box.clientHeight < 80) loadMoreConversations().catch(showError);
}

async function loadTasks() {
  renderTasks(await api("GET", "/tasks"));
}

// "Tokens today: N" in the header; a refusal past TOKENS_PER_DAY arrives as any other error.
async function loadUsage() {
  const usage = await api("GET", "/usage");
  document.getElementById("usage").textContent = `Tokens today: ${usage.input_tokens + usage.output_tokens}`;
}

function setConversation(id) {
  state.conversationId = id;
  store.set("conversation", id);
  markActiveConversation();
}

async function openConversation(id, saved = null) {
  let conversation;
  try {
    conversation = await api("GET", `/conversations/${encodeURIComponent(id)}`);
  } catch (error) {
    if (error.status !== 404) throw error;
    store.set("reply", null);
    return newChat();
  }
  setConversation(id);
  renderMessages(conversation.messages, conversation.approvals);
  // A reply this tab left running to look at another conversation is picked up again.
  const left = state.detached.get(id);
  if (!saved && left) saved = { runId: left, conversationId: id, seq: 0, items: [] };
  if (saved && saved.conversationId === id) {
    // Finished while the page was away: the stored conversation already holds all of it.
    const stored = conversation.messages.some((m) => m.run_id === saved.runId && m.role !== "user");
    state.detached.delete(id);
    if (stored) store.set("reply", null);
    else resumeReply(saved);
  }
}

// The reply being written keeps running on the server while another conversation is shown
// (the page asked for on_disconnect "continue"); coming back follows it again.
function leaveReply() {
  const reply = state.reply;
  if (!reply) return true;
  if (!reply.runId) return false; // not started yet: a moment later it can be left
  reply.finished = true;
  reply.abort.abort();
  state.detached.set(reply.conversationId, reply.runId);
  store.set("reply", null);
  state.reply = null;
  setBusy(false);
  return true;
}

function switchConversation(id) {
  closePanels();
  if (id === state.conversationId && state.reply) return;
  if (!leaveReply()) return banner("The reply is just starting; try again in a moment.", "info");
  openConversation(id).then(loadConversations).catch(showError);
}

function newChat() {
  closePanels();
  if (!leaveReply()) return;
  setConversation(null);
  clearMessages();
  loadConversations().catch(showError);
  $("input").focus();
}

async function deleteConversation(id) {
  await api("DELETE", `/conversations/${encodeURIComponent(id)}`);
  if (id === state.conversationId) newChat();
  await loadConversations();
}

// Answer an earlier message of the shown conversation again (regenerate), or, with `edited`,
// with its new text. The server drops what followed that message; so does the page.
function answerAgain(userNode, edited) {
  const id = userNode.dataset.id;
  if (!id || state.reply || !state.loaded) return;
  hideBanner();
  while (userNode.nextElementSibling) userNode.nextElementSibling.remove();
  if (edited !== undefined) userNode.querySelector(".bubble").textContent = edited;
  const reply = newReply({ again: id, message: edited || "" });
  if (reply.transport === "ws") ws.chat(reply, reply.message);
  else followSSE(reply, () => sse.chat(reply, reply.message));
  scrollDown(true);
}

function regenerate(turnNode) {
  let node = turnNode.previousElementSibling;
  while (node && !node.classList.contains("user")) node = node.previousElementSibling;
  if (node) answerAgain(node);
}

// The message's bubble becomes a box: Enter (or Save) resends, Escape (or Cancel) puts it back.
function editMessage(userNode) {
  if (state.reply || !userNode.dataset.id || userNode.querySelector(".edit-box")) return;
  const bubble = userNode.querySelector(".bubble");
  const form = el("form", "edit-box");
  const box = el("textarea");
  box.value = bubble.textContent;
  box.rows = Math.min(8, box.value.split("\n").length + 1);
  box.setAttribute("aria-label", "Edit message");
  const save = el("button", "primary", "Save and send");
  save.type = "submit";
  const cancel = el("button", "ghost", "Cancel");
  cancel.type = "button";
  const buttons = el("div", "edit-buttons");
  buttons.append(cancel, save);
  form.append(box, buttons);
  const close = () => {
    form.replaceWith(bubble);
    userNode.querySelector(".edit").focus();
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = box.value.trim();
    if (!text) return;
    form.replaceWith(bubble);
    answerAgain(userNode, text);
    $("input").focus();
  });
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      close();
    }
  });
  cancel.addEventListener("click", close);
  bubble.replaceWith(form);
  box.focus();
}

// After a reply, the ids of the messages sent live (for Edit and Regenerate) come from the
// stored conversation.
async function learnMessageIds(conversationId) {
  const conversation = await api("GET", `/conversations/${encodeURIComponent(conversationId)}`);
  if (state.conversationId !== conversationId) return;
  const said = conversation.messages.filter((message) => message.role === "user");
  const nodes = messages().querySelectorAll(".msg.user");
  if (said.length !== nodes.length) return;
  said.forEach((message, index) => { nodes[index].dataset.id = message.id; });
}

// ---- the user's feed: what other tabs, devices and instances change -------------------------

// GET /events streams the user's changes; a reply started elsewhere in the conversation shown
// here is followed live, lists and tasks are refreshed as they change.
const feed = {
  abort: null,
  lastId: null,
  opening: false,

  start() {
    this.stop();
    const abort = new AbortController();
    this.abort = abort;
    this.follow(abort);
  },

  stop() {
    if (this.abort) this.abort.abort();
    this.abort = null;
  },

  async follow(abort) {
    for (let attempt = 0; !abort.signal.aborted; attempt++) {
      try {
        const headers = this.lastId ? { "Last-Event-ID": this.lastId } : {};
        const response = await request("GET", "/events", { headers, signal: abort.signal });
        attempt = 0;
        await readEvents(response, (event) => this.on(event));
      } catch (error) {
        if (error.name === "AbortError" || error.status === 401) return;
      }
      await napUntilOnline(Math.min(10000, 1000 * 2 ** attempt));
    }
  },

  on(event) {
    if (event.id) this.lastId = event.id;
    const shown = event.conversation_id && event.conversation_id === state.conversationId;
    switch (event.type) {
      case "run_started":
        // Redrawn from the stored conversation first: it holds the message this reply answers
        // (sent from another tab or device), then the reply is followed live.
        if (shown && !state.reply && state.loaded && !this.opening) {
          this.opening = true;
          openConversation(event.conversation_id, { runId: event.run_id, conversationId: event.conversation_id,
            seq: 0, items: [] }).catch(showError).finally(() => { this.opening = false; });
        }
        break;
      case "run_finished":
        if (state.detached.get(event.conversation_id) === event.run_id) state.detached.delete(event.conversation_id);
        // Not followed here (this tab was busy, or away): the stored conversation has it all.
        if (shown && !state.reply && state.lastRunId !== event.run_id) {
          openConversation(state.conversationId).catch(showError);
        }
        break;
      case "conversation_deleted":
        if (shown && !state.reply) newChat();
        break;
      case "task_added":
      case "task_changed":
      case "task_removed":
        loadTasks().catch(showError);
        return;
      case "reload":
        loadTasks().catch(showError);
        break;
    }
    loadConversations().catch(showError);
  },
};

// ---- the reply being written ----------------------------------------------------------------

function newReply(fields) {
  const reply = {
    runId: null,
    conversationId: state.conversationId,
    seq: 0,
    items: [], // what has been shown, redrawn after a reload
    transport: state.transport,
    finished: false,
    stopRequested: false,
    abort: new AbortController(),
    turn: new Turn(true),
    userNode: null,
    again: undefined, // an earlier user message answered anew (regenerate, edit)
    ...fields,
  };
  state.reply = reply;
  setBusy(true);
  return reply;
}

function saveReply(reply) {
  if (!reply.runId) return;
  const { runId, conversationId, seq, items } = reply;
  store.set("reply", { runId, conversationId, seq, items });
}

function onEvent(reply, event) {
  if (reply.finished || event.seq <= reply.seq) return; // already shown (a resume overlaps)
  reply.seq = event.seq;
  const items = reply.items;
  switch (event.type) {
    case "start":
      reply.runId = event.run_id;
      hideBanner(); // the server answers: what an earlier banner said is over
      if (reply.conversationId !== event.conversation_id) {
        reply.conversationId = event.conversation_id;
        setConversation(event.conversation_id);
        loadConversations().catch(showError);
      }
      if (reply.stopRequested) stop();
      break;
    case "text": {
      reply.turn.text(event.content);
      const last = items[items.length - 1];
      if (last && last.kind === "text") last.content += event.content;
      else items.push({ kind: "text", content: event.content });
      break;
    }
    case "tool_call":
      reply.turn.tool(event);
      items.push({ kind: "tool", call_id: event.call_id, name: event.name, arguments: event.arguments });
      break;
    case "tool_result": {
      reply.turn.result(event);
      const call = items.find((item) => item.kind === "tool" && item.call_id === event.call_id);
      if (call) call.result = event.result;
      loadTasks().catch(showError);
      break;
    }
    case "approval_request":
      reply.turn.approval(event);
      items.push({ kind: "approval", ...event });
      break;
    case "error":
      reply.error = event.message;
      break;
    case "done":
      finishReply(reply, event.status);
      return;
  }
  saveReply(reply);
}

function finishReply(reply, status) {
  if (reply.finished) return;
  reply.finished = true;
  state.lastRunId = reply.runId;
  reply.turn.finish(status, reply.error);
  store.set("reply", null);
  announce(reply, status);
  if (state.reply === reply) {
    state.reply = null;
    setBusy(false);
    hideBanner("busy");
  }
  if (reply.conversationId) learnMessageIds(reply.conversationId).catch(showError);
  loadConversations().catch(showError);
  loadTasks().catch(showError);
  loadUsage().catch(showError);
}

// The server refused the message (limit, conflict, bad token): nothing was stored, so undo it.
function refused(reply, error) {
  reply.finished = true;
  reply.turn.node.remove();
  if (reply.userNode) reply.userNode.remove();
  if (!messages().querySelector(".msg")) $("empty").hidden = false;
  if (!$("input").value && reply.message && !reply.again) $("input").value = reply.message;
  learnLimit(error);
  autosize(); // the text back in the box, at its size
  state.reply = null;
  setBusy(false);
  showError(error);
  // Show what the server kept: what was decided, or the conversation an edit did not change.
  if (reply.decision || reply.again) openConversation(state.conversationId).catch(showError);
}

function resumeReply(saved) {
  const reply = newReply({ runId: saved.runId, conversationId: saved.conversationId, seq: saved.seq,
    items: saved.items || [] });
  scrollDown(true); // the live reply is what the user came back for
  for (const item of reply.items) {
    if (item.kind === "text") reply.turn.text(item.content);
    else if (item.kind === "approval") reply.turn.approval(item);
    else {
      reply.turn.tool(item);
      if ("result" in item) reply.turn.result(item);
    }
  }
  if (reply.transport === "ws") ws.resume(reply);
  else followSSE(reply, () => sse.resume(reply));
}

function send() {
  const input = $("input");
  const message = input.value.trim();
  if (message && state.reply && state.loaded) {
    // Not silently ignored: the message stays in the box until the reply is done.
    banner("A reply is still being written: your message stays here. Send it once the reply ends, or Stop it (Escape).", "busy");
    return;
  }
  if (!message || state.reply || !state.loaded) return;
  input.value = "";
  autosize();
  hideBanner(); // a new message: the last one's trouble is over
  declineWaiting();
  const userNode = appendUser(message);
  const reply = newReply({ userNode, message });
  if (reply.transport === "ws") ws.chat(reply, message);
  else followSSE(reply, () => sse.chat(reply, message));
}

async function stop() {
  const reply = state.reply;
  if (!reply || reply.finished) return;
  reply.stopRequested = true;
  // The Stop button goes away: the keyboard stays in the composer, not on <body>.
  $("input").focus();
  $("stop").disabled = true;
  if (!reply.runId) return; // stopped as soon as the start event names the run
  try {
    await (reply.transport === "ws" ? ws : sse).cancel(reply);
  } catch (error) {
    if (error.code !== "run_finished") showError(error);
  }
}

// Said once the reply is done (the message list is no live region: it would read every token).
function announce(reply, status) {
  const words = [...reply.turn.node.querySelectorAll(".bubble")].map((bubble) => bubble.textContent).join(" ");
  const label = STATUS_LABELS[status] ? `${STATUS_LABELS[status]}. ` : "";
  // A reply stopped at a question: the question is what the user must hear, not "done".
  const asked = [...reply.turn.node.querySelectorAll(".approval-buttons")]
    .map((buttons) => buttons.parentNode.querySelector(".approval-question").textContent);
  const question = asked.length ? ` The assistant asks: ${asked.join(" ")} Approve or Reject below.` : "";
  $("announce").textContent = `${label}${words.slice(0, 500)}${question}`.trim() || "The reply is done.";
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("stop").disabled = false;
  if (!busy && (document.activeElement === document.body || document.activeElement === $("stop"))) $("input").focus();
  for (const radio of document.querySelectorAll("input[name=transport]")) radio.disabled = busy;
  document.body.classList.toggle("busy", busy);
}

// ---- sign-in --------------------------------------------------------------------------------

function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(part.padEnd(Math.ceil(part.length / 4) * 4, "="));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
  } catch {
    return null;
  }
}

// Dev mode prints a link `/#token=…`: a fragment never reaches the server or its logs.
function tokenFromFragment() {
  const match = location.hash.match(/[#&]token=([^&]+)/);
  if (!match) return;
  store.set("token", decodeURIComponent(match[1]));
  history.replaceState(null, "", location.pathname + location.search);
}

async function signIn(token) {
  const claims = claimsOf(token);
  if (!claims || typeof claims.sub !== "string" || !claims.sub) {
    banner("That is not a valid token: it has no user (sub).");
    return showSignIn();
  }
  if (claims.exp && claims.exp * 1000 < Date.now()) {
    banner("This token has expired. Sign in with a new one.");
    store.set("token", null);
    return showSignIn();
  }
  store.set("token", token);
  state.token = token;
  state.user = claims.sub;
  $("who").textContent = claims.sub;
  $("sign-out").hidden = false;
  $("sign-in").hidden = true;
  $("app").hidden = false;
  hideBanner();
  if (state.transport === "ws") ws.open();
  feed.start();
  const saved = store.get("reply");
  const conversation = saved ? saved.conversationId : store.get("conversation");
  try {
    await Promise.all([loadConversations(), loadTasks(), loadUsage()]);
    if (conversation) await openConversation(conversation, saved);
  } catch (error) {
    showError(error);
  }
  state.loaded = true;
  document.body.dataset.loaded = "true";
  $("input").focus();
}

function showSignIn() {
  $("app").hidden = true;
  $("sign-in").hidden = false;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("token-input").focus();
}

function signOut({ keepBanner = false } = {}) {
  ws.close();
  feed.stop();
  if (state.reply) {
    state.reply.abort.abort();
    state.reply = null;
    setBusy(false);
  }
  store.set("token", null);
  store.set("reply", null);
  state.detached.clear();
  state.loaded = false;
  delete document.body.dataset.loaded;
  clearMessages();
  state.token = null;
  state.user = null;
  if (!keepBanner) hideBanner();
  showSignIn();
}

// ---- wiring ---------------------------------------------------------------------------------

// On a phone the conversations and the tasks are panels over the chat, opened from the top bar.
function togglePanel(name) {
  const open = document.body.dataset.panel === name ? "" : name;
  document.body.dataset.panel = open;
  $("show-chats").setAttribute("aria-expanded", String(open === "chats"));
  $("show-tasks").setAttribute("aria-expanded", String(open === "tasks"));
}

function closePanels() {
  if (document.body.dataset.panel) togglePanel("");
}

function autosize() {
  const input = $("input");
  input.style.height = "auto";
  input.style.height = `${input.scrollHeight + 2}px`;
  countBytes();
}

// The server refuses a message over its size limit (MAX_MESSAGE_BYTES, 16 KB unless configured;
// a refusal names the real figure and the page learns it). Near the limit a counter shows.
const limits = { messageBytes: 16 * 1024 };
const bytesOf = (text) => new TextEncoder().encode(text).length;

function countBytes() {
  const used = bytesOf($("input").value.trim());
  const counter = $("counter");
  const near = used >= limits.messageBytes * 0.8;
  counter.hidden = !near;
  counter.classList.toggle("over", used > limits.messageBytes);
  counter.textContent = near ? `${used.toLocaleString("en")} / ${limits.messageBytes.toLocaleString("en")} bytes` : "";
}

function learnLimit(error) {
  const match = /longer than (\d+) bytes/.exec(error.message || "");
  if (match) limits.messageBytes = Number(match[1]);
}

function main() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  $("input").addEventListener("input", autosize);
  // Escape stops the reply from anywhere on the page (an open editor takes its own Escape first).
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.reply && !event.defaultPrevented) {
      event.preventDefault();
      stop();
    }
  });
  $("token-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("sign-in-form").requestSubmit();
    }
  });
  messages().addEventListener("scroll", onMessagesScroll, { passive: true });
  for (const type of ["wheel", "touchmove", "keydown", "pointerdown"]) {
    messages().addEventListener(type, onUserScrolls, { passive: true });
  }
  messages().addEventListener("touchstart", (event) => { follow.touchY = event.touches[0].clientY; }, { passive: true });
  $("jump").addEventListener("click", jumpToLatest);
  $("show-chats").addEventListener("click", () => togglePanel("chats"));
  $("show-tasks").addEventListener("click", () => togglePanel("tasks"));
  // Signed in or out in another tab: this one follows.
  window.addEventListener("storage", (event) => {
    if (event.key !== "chat.token") return;
    const token = store.get("token");
    if (!token && state.token) signOut();
    else if (token && token !== state.token) signIn(token);
  });
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", newChat);
  $("conversations").addEventListener("keydown", onConversationKeys);
  window.addEventListener("online", onOnline);
  window.addEventListener("offline", onOffline);
  $("sidebar").addEventListener("scroll", onSidebarScroll, { passive: true });
  $("more-chats").addEventListener("click", () => loadMoreConversations().catch(showError));
  document.querySelector(".skip-link").addEventListener("click", (event) => {
    event.preventDefault();
    $("input").focus();
  });
  $("banner-close").addEventListener("click", () => hideBanner());
  $("sign-out").addEventListener("click", () => signOut());
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token-input").value.trim());
    $("token-input").value = "";
  });
  for (const radio of document.querySelectorAll("input[name=transport]")) {
    radio.checked = radio.value === state.transport;
    radio.addEventListener("change", () => {
      state.transport = radio.value;
      store.set("transport", radio.value);
      if (radio.value === "ws") ws.open();
      else ws.close();
    });
  }

  tokenFromFragment();
  const token = store.get("token");
  if (token) signIn(token);
  else showSignIn();
}

main();
