// ossrag web UI: streams /v1/chat/completions, shows citations and ingest jobs. No build step.
"use strict";

const $ = (selector) => document.querySelector(selector);
const history = []; // earlier turns, sent so follow-ups keep their context
let pollTimer = null;

const keyInput = $("#api-key");
keyInput.value = localStorage.getItem("ossrag-api-key") || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem("ossrag-api-key", keyInput.value.trim());
  refreshJobs();
});

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = keyInput.value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function errorMessage(response) {
  try {
    return (await response.json()).error.message;
  } catch {
    return `HTTP ${response.status}`;
  }
}

// ---------------------------------------------------------------- passages and citations

function openPassage(n, source) {
  $("#passage-n").textContent = `[${n}]`;
  $("#passage-source").textContent = source.source;
  $("#passage-heading").textContent = source.heading || "";
  $("#passage-lines").textContent = `lines ${source.start_line}–${source.end_line}`;
  $("#passage-text").textContent = source.text;
  $("#passage").showModal();
}
$("#passage-close").addEventListener("click", () => $("#passage").close());

function renderAnswer(el, text, sources) {
  el.replaceChildren();
  let last = 0;
  for (const match of text.matchAll(/\[(\d{1,3})\]/g)) {
    const n = Number(match[1]);
    const source = sources[n - 1];
    if (!source) continue;
    el.append(text.slice(last, match.index));
    const button = document.createElement("button");
    button.type = "button";
    button.className = "cite";
    button.dataset.n = String(n);
    button.textContent = `[${n}]`;
    button.title = source.source;
    button.addEventListener("click", () => openPassage(n, source));
    el.append(button);
    last = match.index + match[0].length;
  }
  el.append(text.slice(last));
}

function renderSources(list, sources) {
  list.replaceChildren(
    ...sources.map((source, i) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = source.source + (source.heading ? ` › ${source.heading}` : "");
      button.addEventListener("click", () => openPassage(i + 1, source));
      item.append(button);
      return item;
    }),
  );
}

// ---------------------------------------------------------------- chat

async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

async function ask(question) {
  const turn = $("#turn").content.firstElementChild.cloneNode(true);
  turn.querySelector(".question").textContent = question;
  const reasoningBox = turn.querySelector(".reasoning");
  const reasoningText = turn.querySelector(".reasoning-text");
  const answerEl = turn.querySelector(".answer");
  const sourcesEl = turn.querySelector(".sources");
  $("#messages").append(turn);
  turn.scrollIntoView({ block: "end" });

  let sources = [];
  let text = "";
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({
        model: "ossrag",
        stream: true,
        footnotes: false,
        reasoning_effort: $("#effort").value,
        messages: [...history, { role: "user", content: question }],
      }),
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    answerEl.dataset.state = "streaming";
    for await (const chunk of sseEvents(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.sources) {
        sources = chunk.sources;
        renderSources(sourcesEl, sources);
      }
      const delta = (chunk.choices && chunk.choices[0] && chunk.choices[0].delta) || {};
      if (delta.reasoning) {
        reasoningBox.hidden = false;
        reasoningText.append(delta.reasoning);
      }
      if (delta.content) {
        text += delta.content;
        renderAnswer(answerEl, text, sources);
      }
    }
    history.push({ role: "user", content: question }, { role: "assistant", content: text });
    answerEl.dataset.state = "done";
  } catch (err) {
    const note = document.createElement("p");
    note.className = "error";
    note.textContent = err.message;
    answerEl.after(note);
    answerEl.dataset.state = "failed";
  }
}

$("#ask-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const question = $("#question").value.trim();
  if (!question) return;
  $("#question").value = "";
  $("#ask").disabled = true;
  try {
    await ask(question);
  } finally {
    $("#ask").disabled = false;
    $("#question").focus();
  }
});

$("#question").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("#ask-form").requestSubmit();
  }
});

// ---------------------------------------------------------------- ingest

function showIngestError(message) {
  const el = $("#ingest-error");
  el.textContent = message || "";
  el.hidden = !message;
}

function renderJobs(jobs) {
  $("#jobs").replaceChildren(
    ...jobs.slice().reverse().map((job) => {
      const item = document.createElement("li");
      item.dataset.status = job.status;
      const total = job.files_total ? `/${job.files_total}` : "";
      let line = `${job.status} · ${job.files_done}${total} files · ${job.chunks_embedded} chunks — ${job.paths.join(", ")}`;
      if (job.error) line += ` — ${job.error}`;
      item.textContent = line;
      return item;
    }),
  );
}

async function refreshJobs() {
  clearTimeout(pollTimer);
  const response = await fetch("/v1/ingest", { headers: headers() });
  if (!response.ok) {
    showIngestError(await errorMessage(response));
    return;
  }
  showIngestError("");
  const { jobs } = await response.json();
  renderJobs(jobs);
  if (jobs.some((job) => job.status === "queued" || job.status === "running")) {
    pollTimer = setTimeout(refreshJobs, 1000);
  }
}

$("#ingest-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const paths = $("#ingest-paths").value.split("\n").map((p) => p.trim()).filter(Boolean);
  if (!paths.length) return;
  const response = await fetch("/v1/ingest", {
    method: "POST",
    headers: headers(),
    body: JSON.stringify({ paths }),
  });
  if (!response.ok) {
    showIngestError(await errorMessage(response));
    return;
  }
  $("#ingest-paths").value = "";
  refreshJobs();
});

refreshJobs();
