// ossrag web UI: a conversation over /v1/chat/completions (streamed), citations with previews,
// and the store panel (/v1/store, /v1/ingest, /v1/upload). No build step, nothing inline (CSP).
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const MODE_NAMES = {
  ossrag: "default mode",
  "ossrag-hybrid": "hybrid",
  "ossrag-dense": "dense",
  "ossrag-bm25": "BM25",
  "ossrag-agent": "agent (the model searches)",
};
let messages = []; // the conversation so far, sent whole so the engine handles follow-ups
let controller = null; // aborts the answer being streamed
let pollTimer = null;

// ---------------------------------------------------------------- API

const keyInput = $("#api-key");
keyInput.value = localStorage.getItem("ossrag-api-key") || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem("ossrag-api-key", keyInput.value.trim());
  refreshStore();
});

function headers(json = true) {
  const h = json ? { "Content-Type": "application/json" } : {};
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

function showError(el, message) {
  el.textContent = message || "";
  el.hidden = !message;
}

// ---------------------------------------------------------------- markdown

// No images either: a document or an answer must not make the browser fetch anything.
const SANITIZE = { FORBID_TAGS: ["style", "form", "input", "button", "img"], FORBID_ATTR: ["style"] };

/** Markdown to sanitized DOM nodes: code highlighted and given a copy button. */
function renderMarkdown(el, text) {
  const html = DOMPurify.sanitize(marked.parse(text, { gfm: true, breaks: false }), SANITIZE);
  el.innerHTML = html;
  for (const link of el.querySelectorAll("a[href]")) {
    link.target = "_blank";
    link.rel = "noopener noreferrer";
  }
  for (const code of el.querySelectorAll("pre > code")) {
    hljs.highlightElement(code);
    code.tabIndex = 0; // it scrolls sideways: keyboard users must reach it
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy-code";
    copy.textContent = "Copy";
    copy.setAttribute("aria-label", "Copy code");
    copy.addEventListener("click", () => copyText(copy, code.textContent));
    code.parentElement.prepend(copy);
  }
}

async function copyText(button, text) {
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => (button.textContent = label), 1500);
}

// ---------------------------------------------------------------- citations

function where(source) {
  return [source.source, source.heading, `lines ${source.start_line}–${source.end_line}`].filter(Boolean).join(" › ");
}

function chip(n, source, sentence) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "cite";
  button.dataset.n = String(n);
  button.textContent = String(n);
  button.setAttribute("aria-label", `Source ${n}: ${where(source)}`);
  button.addEventListener("click", () => openPassage(n, source, sentence, button.dataset.evidence));
  button.addEventListener("mouseenter", () => showPreview(button, n, source));
  button.addEventListener("focus", () => showPreview(button, n, source));
  button.addEventListener("mouseleave", hidePreview);
  button.addEventListener("blur", hidePreview);
  return button;
}

/** Replace [n] markers in the answer's text (not in code) with chips for known sources. */
function linkCitations(el, sources) {
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT, {
    acceptNode: (node) => (node.parentElement.closest("code, pre") ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
  });
  const nodes = [];
  while (walker.nextNode()) nodes.push(walker.currentNode);
  for (const node of nodes) {
    const text = node.textContent;
    const pattern = /\[(\d{1,3})\]/g;
    if (!pattern.test(text)) continue;
    const block = node.parentElement.closest("p, li, td, blockquote, h1, h2, h3, h4") || el;
    const sentence = block.textContent.replace(/\[\d{1,3}\]/g, " ");
    const parts = [];
    let last = 0;
    for (const match of text.matchAll(/\[(\d{1,3})\]/g)) {
      const n = Number(match[1]);
      const source = sources[n - 1];
      if (!source) continue;
      parts.push(document.createTextNode(text.slice(last, match.index)), chip(n, source, sentence));
      last = match.index + match[0].length;
    }
    if (!parts.length) continue;
    parts.push(document.createTextNode(text.slice(last)));
    node.replaceWith(...parts);
  }
}

const preview = $("#preview");

function showPreview(anchor, n, source) {
  preview.replaceChildren();
  const head = document.createElement("strong");
  head.textContent = `[${n}] ${where(source)}`;
  const body = document.createElement("p");
  const text = source.text.replace(/\s+/g, " ").trim();
  body.textContent = text.length > 280 ? `${text.slice(0, 280)}…` : text;
  preview.append(head, body);
  preview.hidden = false;
  const box = anchor.getBoundingClientRect();
  const width = Math.min(380, window.innerWidth - 16);
  const left = Math.max(8, Math.min(box.left, window.innerWidth - width - 8));
  preview.style.width = `${width}px`; // CSSOM, allowed under a strict CSP
  preview.style.left = `${left + window.scrollX}px`;
  preview.style.top = `${box.bottom + window.scrollY + 6}px`;
}

function hidePreview() {
  preview.hidden = true;
}

const WORD = /[\p{L}\p{N}]{4,}/gu;

/** 0-based indexes of the passage lines sharing at least two words with the citing sentence. */
function supportingLines(lines, sentence) {
  const wanted = new Set((sentence.toLowerCase().match(WORD) || []));
  return lines
    .map((line, i) => [i, new Set(line.toLowerCase().match(WORD) || [])])
    .filter(([, words]) => [...words].filter((w) => wanted.has(w)).length >= 2)
    .map(([i]) => i);
}

/** 0-based indexes of the passage lines inside a verified claim's evidence ("start-end"). */
function evidenceLines(lines, source, evidence) {
  const [first, last] = evidence.split("-").map(Number);
  return lines.map((_, i) => i).filter((i) => source.start_line + i >= first && source.start_line + i <= last);
}

function openPassage(n, source, sentence = "", evidence = "") {
  hidePreview();
  $("#passage-n").textContent = `[${n}]`;
  $("#passage-source").textContent = source.source;
  $("#passage-heading").textContent = source.heading || "(no heading)";
  $("#passage-lines").textContent = `lines ${source.start_line}–${source.end_line}`;
  renderMarkdown($("#passage-text"), source.text);
  const lines = source.text.split("\n");
  const marked_ = new Set(evidence ? evidenceLines(lines, source, evidence) : supportingLines(lines, sentence));
  $("#passage-numbered").replaceChildren(
    ...lines.map((line, i) => {
      const item = document.createElement("li");
      item.value = source.start_line + i;
      item.textContent = line || " ";
      if (marked_.has(i)) item.className = "hit";
      return item;
    }),
  );
  $("#passage-match").textContent = !marked_.size
    ? ""
    : evidence
      ? `· ${marked_.size} highlighted: the sentence that supports the claim`
      : `· ${marked_.size} highlighted: they share words with the cited sentence`;
  $("#passage-lines-box").open = marked_.size > 0;
  $("#passage").showModal();
}

$("#passage-close").addEventListener("click", () => $("#passage").close());
$("#passage").addEventListener("click", (event) => {
  if (event.target === $("#passage")) $("#passage").close(); // a click on the backdrop
});

/**
 * The engine's verdict on each cited claim, shown on the answer's chips: an unsupported
 * citation reads "n?", a supported one opens its passage at the sentence that supports it.
 * Claims and chips both follow the answer's order, so each chip takes the next claim citing it.
 */
function markClaims(answerEl, claims) {
  const pairs = claims.flatMap((claim) => claim.citations.map((n) => ({ claim, n })));
  let next = 0;
  for (const button of answerEl.querySelectorAll(".cite")) {
    const n = Number(button.dataset.n);
    const at = pairs.findIndex((pair, i) => i >= next && pair.n === n);
    if (at < 0) continue;
    next = at + 1;
    const { claim } = pairs[at];
    const evidence = (claim.evidence || []).find((e) => e.n === n);
    if (claim.verdict === "unsupported") {
      button.classList.add("unsupported");
      button.textContent = `${n}?`;
      button.setAttribute("aria-label", `${button.getAttribute("aria-label")}: does not support this claim`);
      button.title = "not supported by this source";
    } else if (evidence) {
      button.dataset.evidence = `${evidence.start_line}-${evidence.end_line}`;
    }
  }
  const bad = claims.filter((claim) => claim.verdict === "unsupported").length;
  if (!bad) return;
  const note = document.createElement("p");
  note.className = "claims-note";
  note.setAttribute("role", "note");
  note.textContent =
    bad === 1 && claims.length === 1
      ? "The answer's one claim is not supported by its source."
      : bad === 1
        ? `1 of ${claims.length} claims is not supported by its source.`
        : `${bad} of ${claims.length} claims are not supported by their sources.`;
  answerEl.after(note);
}

function renderSources(list, sources, cited) {
  list.replaceChildren(
    ...sources.map((source, i) => {
      const item = document.createElement("li");
      if (cited && !cited.includes(i + 1)) item.className = "uncited";
      const button = chip(i + 1, source, "");
      const label = document.createElement("span");
      label.textContent = source.source + (source.heading ? ` › ${source.heading}` : "");
      button.append(label);
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
  $("#empty").hidden = true;
  const turn = $("#turn").content.firstElementChild.cloneNode(true);
  $(".question", turn).textContent = question;
  const model = $("#mode").value;
  const effort = $("#effort").value;
  $(".meta", turn).textContent = `${effort} effort · ${MODE_NAMES[model]}`;
  const reasoningBox = $(".reasoning", turn);
  const reasoningText = $(".reasoning-text", turn);
  const answerEl = $(".answer", turn);
  const sourcesEl = $(".sources", turn);
  const copyButton = $(".copy-answer", turn);
  $("#messages").append(turn);
  turn.scrollIntoView({ block: "end" });

  const sent = [...messages, { role: "user", content: question }];
  let sources = [];
  let claims = [];
  let text = "";
  let frame = 0;
  const paint = () => {
    frame = 0;
    renderMarkdown(answerEl, text);
    linkCitations(answerEl, sources);
  };
  controller = new AbortController();
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      signal: controller.signal,
      body: JSON.stringify({ model, stream: true, footnotes: false, reasoning_effort: effort, messages: sent }),
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    answerEl.dataset.state = "streaming";
    for await (const chunk of sseEvents(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.sources) {
        sources = chunk.sources;
        renderSources(sourcesEl, sources, null);
      }
      if (chunk.notice) $(".meta", turn).textContent += ` · ${chunk.notice}`;
      if (chunk.cited) renderSources(sourcesEl, sources, chunk.cited);
      if (chunk.claims) claims = chunk.claims;
      const delta = (chunk.choices && chunk.choices[0] && chunk.choices[0].delta) || {};
      if (delta.reasoning) {
        reasoningBox.hidden = false;
        reasoningText.append(delta.reasoning);
      }
      if (delta.content) {
        text += delta.content;
        if (!frame) frame = requestAnimationFrame(paint);
      }
    }
    cancelAnimationFrame(frame);
    paint();
    markClaims(answerEl, claims);
    messages = [...sent, { role: "assistant", content: text }];
    answerEl.dataset.state = "done";
    copyButton.hidden = false;
    copyButton.addEventListener("click", () => copyText(copyButton, text));
  } catch (err) {
    cancelAnimationFrame(frame);
    if (text) paint();
    const note = document.createElement("p");
    note.className = "error";
    note.setAttribute("role", "alert");
    note.textContent = err.name === "AbortError" ? "Stopped." : err.message;
    answerEl.after(note);
    answerEl.dataset.state = "failed";
  } finally {
    controller = null;
  }
}

function newChat() {
  if (controller) controller.abort();
  messages = [];
  $("#messages").replaceChildren($("#empty"));
  $("#empty").hidden = false;
  $("#question").value = "";
  $("#question").focus();
}

$("#new-chat").addEventListener("click", newChat);
$("#stop").addEventListener("click", () => controller && controller.abort());

$("#ask-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const question = $("#question").value.trim();
  if (!question || controller) return;
  $("#question").value = "";
  $("#ask").disabled = true;
  $("#stop").hidden = false;
  try {
    await ask(question);
  } finally {
    $("#ask").disabled = false;
    $("#stop").hidden = true;
    $("#question").focus();
  }
});

$("#question").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("#ask-form").requestSubmit();
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  hidePreview();
  if (document.body.classList.contains("store-open")) toggleStore(false);
});

// ---------------------------------------------------------------- store panel

function toggleStore(open) {
  document.body.classList.toggle("store-open", open);
  $("#store-toggle").setAttribute("aria-expanded", String(open));
  if (open) $("#store-close").focus();
}
$("#store-toggle").addEventListener("click", () => toggleStore(!document.body.classList.contains("store-open")));
$("#store-close").addEventListener("click", () => toggleStore(false));

const numbers = new Intl.NumberFormat();

/** "1 chunk", "2 chunks": a count and its noun, singular for one. */
function counted(n, noun) {
  return `${numbers.format(n)} ${n === 1 ? noun : `${noun}s`}`;
}

/** A short time for a narrow box: the time of day if today, else the date. */
function formatTime(seconds) {
  if (!seconds) return "—";
  const when = new Date(seconds * 1000);
  if (when.toDateString() === new Date().toDateString()) {
    return when.toLocaleTimeString(undefined, { timeStyle: "short" });
  }
  return when.toLocaleDateString(undefined, { dateStyle: "medium" });
}

function fullTime(seconds) {
  if (!seconds) return "";
  return new Date(seconds * 1000).toLocaleString(undefined, { dateStyle: "full", timeStyle: "medium" });
}

function renderJobs(jobs) {
  if (!jobs.length) {
    const none = document.createElement("li");
    none.className = "muted none";
    none.textContent = "none yet";
    $("#jobs").replaceChildren(none);
    return;
  }
  $("#jobs").replaceChildren(
    ...jobs.slice().reverse().map((job) => {
      const item = document.createElement("li");
      item.dataset.status = job.status;
      const what = document.createElement("div");
      what.className = "job-paths";
      what.textContent = job.paths.map((p) => p.split("/").pop() || p).join(", ");
      what.title = job.paths.join("\n");
      const bar = document.createElement("progress");
      bar.max = job.files_total || 1;
      bar.value = job.status === "done" ? bar.max : job.files_done;
      bar.setAttribute("aria-label", `progress of ${what.textContent}`);
      const line = document.createElement("div");
      line.className = "job-line";
      const total = job.files_total ? `/${job.files_total}` : "";
      const chunks = job.report ? job.report.chunks_embedded : job.chunks_embedded;
      line.textContent = `${job.status} · ${job.files_done}${total} files · ${counted(chunks, "chunk")} embedded`;
      item.append(what, bar, line);
      if (job.error) {
        const error = document.createElement("div");
        error.className = "error";
        error.textContent = job.error;
        item.append(error);
      }
      return item;
    }),
  );
}

function renderFiles(store) {
  $("#files").replaceChildren(
    ...store.file_list.map((file) => {
      const item = document.createElement("li");
      const name = document.createElement("span");
      name.textContent = file.source;
      name.title = `${file.root}/${file.source}`;
      const count = document.createElement("span");
      count.className = "muted";
      count.textContent = counted(file.chunks, "chunk");
      item.append(name, count);
      return item;
    }),
  );
  $("#files-box summary").textContent = `Files (${numbers.format(store.files)})`;
}

async function refreshStore() {
  clearTimeout(pollTimer);
  const response = await fetch("/v1/store", { headers: headers(false) });
  if (!response.ok) {
    showError($("#store-error"), await errorMessage(response));
    return;
  }
  showError($("#store-error"), "");
  const store = await response.json();
  $("#stat-files").textContent = numbers.format(store.files);
  $("#stat-chunks").textContent = numbers.format(store.chunks);
  $("#stat-sync").textContent = formatTime(store.last_sync);
  $("#stat-sync").title = fullTime(store.last_sync);
  renderJobs(store.jobs);
  renderFiles(store);
  if (store.jobs.some((job) => job.status === "queued" || job.status === "running")) {
    pollTimer = setTimeout(refreshStore, 700);
  }
}

$("#ingest-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const paths = $("#ingest-paths").value.split("\n").map((p) => p.trim()).filter(Boolean);
  if (!paths.length) return;
  const response = await fetch("/v1/ingest", { method: "POST", headers: headers(), body: JSON.stringify({ paths }) });
  if (!response.ok) {
    showError($("#ingest-error"), await errorMessage(response));
    return;
  }
  showError($("#ingest-error"), "");
  $("#ingest-paths").value = "";
  refreshStore();
});

async function upload(files) {
  const errors = [];
  for (const file of files) {
    const response = await fetch(`/v1/upload?name=${encodeURIComponent(file.name)}`, {
      method: "POST",
      headers: { ...headers(false), "Content-Type": "application/octet-stream" },
      body: file,
    });
    if (!response.ok) errors.push(`${file.name}: ${await errorMessage(response)}`);
  }
  showError($("#ingest-error"), errors.join("\n"));
  refreshStore();
}

const dropzone = $("#dropzone");
for (const name of ["dragenter", "dragover"]) {
  dropzone.addEventListener(name, (event) => {
    event.preventDefault();
    dropzone.classList.add("over");
  });
}
for (const name of ["dragleave", "drop"]) {
  dropzone.addEventListener(name, () => dropzone.classList.remove("over"));
}
dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  upload([...event.dataTransfer.files]);
});
$("#file-input").addEventListener("change", (event) => {
  upload([...event.target.files]);
  event.target.value = "";
});

refreshStore();
