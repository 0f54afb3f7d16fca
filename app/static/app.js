// The chat page: plain browser JavaScript, no build step, no dependencies (works offline).
//
// One reply is written at a time. Its state (run id, last seq seen, what has been shown) is kept
// in sessionStorage on every event, so a reload re-attaches to it: the saved part is redrawn and
// the rest is asked for with Last-Event-ID (SSE) or a `resume` frame (WebSocket).
"use strict";

const $ = (id) => document.getElementById(id);

const store = {
  get(key) {
    try { return JSON.parse(sessionStorage.getItem(`chat.${key}`)); } catch { return null; }
  },
  set(key, value) {
    if (value === null || value === undefined) sessionStorage.removeItem(`chat.${key}`);
    else sessionStorage.setItem(`chat.${key}`, JSON.stringify(value));
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
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

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
  banner(error.message || String(error));
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
      body: { message, conversation_id: reply.conversationId, on_disconnect: "continue" },
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
    await sleep(delay);
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
    this.send({ type: "chat", message, conversation_id: reply.conversationId });
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

function scrollDown(force) {
  const box = messages();
  if (force || box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
}

function clearMessages() {
  messages().replaceChildren($("empty") || el("p", "empty"));
  $("empty").hidden = false;
}

function appendUser(text) {
  $("empty").hidden = true;
  const node = el("div", "msg user");
  node.append(el("div", "bubble", text));
  messages().append(node);
  scrollDown(true);
  return node;
}

const STATUS_LABELS = { cancelled: "Stopped", interrupted: "Interrupted", failed: "Failed" };

function pretty(value) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > 400 ? `${text.slice(0, 399)}…` : text;
}

// One assistant reply: tool cards and text, in the order they came.
class Turn {
  constructor(live) {
    $("empty").hidden = true;
    this.node = el("div", live ? "msg assistant streaming" : "msg assistant");
    this.bubble = null;
    this.cards = new Map();
    this.finished = false;
    messages().append(this.node);
  }

  text(content) {
    if (!content) return;
    if (!this.bubble) {
      this.bubble = el("div", "bubble");
      this.node.append(this.bubble);
    }
    this.bubble.append(content);
    scrollDown();
  }

  tool({ call_id, name, arguments: args }) {
    const card = el("div", "tool");
    card.dataset.callId = call_id;
    card.append(el("div", "tool-name", name), el("pre", "tool-args", pretty(args)), el("pre", "tool-result"));
    this.cards.set(call_id, card);
    this.node.append(card);
    this.bubble = null;
    scrollDown();
  }

  result({ call_id, result }) {
    const card = this.cards.get(call_id);
    if (card) card.querySelector(".tool-result").textContent = pretty(result);
  }

  // A call waiting for the user's yes: the question in words and two buttons; once decided,
  // the decision instead. Redrawn from the conversation after a reload.
  approval({ run_id, call_id, description, decision, reason }) {
    const card = el("div", "approval");
    card.dataset.callId = call_id;
    card.append(el("p", "approval-question", `${description || "Run this tool"}?`));
    if (decision) card.append(el("p", `approval-decision ${decision}`, decisionText(decision, reason)));
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
    this.node.append(card);
    scrollDown();
    return card;
  }

  finish(status, error) {
    this.finished = true;
    this.node.classList.remove("streaming");
    this.node.dataset.status = status;
    if (error) this.node.append(el("div", "bubble error", error));
    if (STATUS_LABELS[status]) this.node.append(el("span", `badge ${status}`, STATUS_LABELS[status]));
    scrollDown();
  }
}

function renderMessages(list, approvals = []) {
  clearMessages();
  const turns = new Map();
  const asked = new Set(approvals.map((approval) => approval.run_id));
  const turnOf = (runId) => {
    let entry = turns.get(runId);
    if (!entry) {
      entry = { turn: new Turn(false), status: "completed" };
      turns.set(runId, entry);
    }
    return entry;
  };
  for (const message of list) {
    if (message.role === "user") {
      appendUser(message.content);
      // A reply that stopped at a question may have said nothing: its turn holds the card.
      if (asked.has(message.run_id)) turnOf(message.run_id).status = "awaiting_approval";
      continue;
    }
    const entry = turnOf(message.run_id);
    entry.status = message.status;
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

function decisionText(decision, reason) {
  if (decision === "approved") return "Approved";
  return reason ? `Declined: ${reason}` : "Declined";
}

// The user's answer to a question on a card: the card shows it, and the continuation (a new
// reply in the same conversation) streams below, once every question of that reply is answered.
function decide(card, runId, callId, approve) {
  if (state.reply || !state.loaded) return;
  for (const button of card.querySelectorAll("button")) button.remove();
  card.append(el("p", `approval-decision ${approve ? "approved" : "rejected"}`, decisionText(approve ? "approved" : "rejected")));
  const reply = newReply({ decision: true });
  if (reply.transport === "ws") ws.decide(reply, runId, callId, approve);
  else followSSE(reply, () => sse.decide(reply, runId, callId, approve));
  $("input").focus();
}

// A decision recorded while the reply still waits for others: no continuation yet.
function waiting(reply) {
  reply.finished = true;
  reply.turn.node.remove();
  state.reply = null;
  setBusy(false);
}

function renderConversations(list) {
  const items = list.map((conversation) => {
    const item = el("li");
    item.dataset.id = conversation.id;
    item.classList.toggle("active", conversation.id === state.conversationId);
    const title = el("button", "title", conversation.title || "Untitled");
    title.type = "button";
    title.title = conversation.title || "";
    title.onclick = () => !state.reply && openConversation(conversation.id).catch(showError);
    const remove = el("button", "delete", "✕");
    remove.type = "button";
    remove.setAttribute("aria-label", "Delete conversation");
    remove.onclick = () => deleteConversation(conversation.id, remove).catch(showError);
    item.append(title, remove);
    return item;
  });
  $("conversations").replaceChildren(...items);
}

function markActiveConversation() {
  for (const item of $("conversations").children) {
    item.classList.toggle("active", item.dataset.id === state.conversationId);
  }
}

function renderTasks(list) {
  const items = list.map((task) => {
    const item = el("li", task.completed ? "done" : "");
    item.append(el("span", "check", task.completed ? "✓" : "○"), el("span", "title", task.title),
      el("span", "id", `#${task.id}`));
    if (task.description) item.title = task.description;
    return item;
  });
  $("tasks").replaceChildren(...items);
  $("no-tasks").hidden = list.length > 0;
}

// ---- conversations and tasks ----------------------------------------------------------------

async function loadConversations() {
  renderConversations(await api("GET", "/conversations"));
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
  if (saved && saved.conversationId === id) {
    // Finished while the page was away: the stored conversation already holds all of it.
    const stored = conversation.messages.some((m) => m.run_id === saved.runId && m.role !== "user");
    if (stored) store.set("reply", null);
    else resumeReply(saved);
  }
}

function newChat() {
  if (state.reply) return;
  setConversation(null);
  clearMessages();
  $("input").focus();
}

async function deleteConversation(id, button) {
  if (state.reply) return;
  if (!button.classList.contains("confirm")) {
    button.classList.add("confirm");
    button.textContent = "Delete?";
    setTimeout(() => {
      button.classList.remove("confirm");
      button.textContent = "✕";
    }, 3000);
    return;
  }
  await api("DELETE", `/conversations/${encodeURIComponent(id)}`);
  if (id === state.conversationId) newChat();
  await loadConversations();
}

// ---- the user's feed: what other tabs, devices and instances change -------------------------

// GET /events streams the user's changes; a reply started elsewhere in the conversation shown
// here is followed live, lists and tasks are refreshed as they change.
const feed = {
  abort: null,
  lastId: null,

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
      await sleep(Math.min(10000, 1000 * 2 ** attempt));
    }
  },

  on(event) {
    if (event.id) this.lastId = event.id;
    const shown = event.conversation_id && event.conversation_id === state.conversationId;
    switch (event.type) {
      case "run_started":
        if (shown && !state.reply && state.loaded) {
          resumeReply({ runId: event.run_id, conversationId: event.conversation_id, seq: 0, items: [] });
        }
        break;
      case "run_finished":
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
  if (state.reply === reply) {
    state.reply = null;
    setBusy(false);
  }
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
  if (!$("input").value && reply.message) $("input").value = reply.message;
  state.reply = null;
  setBusy(false);
  showError(error);
  if (reply.decision) openConversation(state.conversationId).catch(showError); // show what was decided
}

function resumeReply(saved) {
  const reply = newReply({ runId: saved.runId, conversationId: saved.conversationId, seq: saved.seq,
    items: saved.items || [] });
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
  if (!message || state.reply || !state.loaded) return;
  input.value = "";
  autosize();
  const userNode = appendUser(message);
  const reply = newReply({ userNode, message });
  if (reply.transport === "ws") ws.chat(reply, message);
  else followSSE(reply, () => sse.chat(reply, message));
}

async function stop() {
  const reply = state.reply;
  if (!reply || reply.finished) return;
  reply.stopRequested = true;
  $("stop").disabled = true;
  if (!reply.runId) return; // stopped as soon as the start event names the run
  try {
    await (reply.transport === "ws" ? ws : sse).cancel(reply);
  } catch (error) {
    if (error.code !== "run_finished") showError(error);
  }
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("stop").disabled = false;
  $("new-chat").disabled = busy;
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
  state.loaded = false;
  delete document.body.dataset.loaded;
  clearMessages();
  state.token = null;
  state.user = null;
  if (!keepBanner) hideBanner();
  showSignIn();
}

// ---- wiring ---------------------------------------------------------------------------------

function autosize() {
  const input = $("input");
  input.style.height = "auto";
  input.style.height = `${input.scrollHeight + 2}px`;
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
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", newChat);
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
