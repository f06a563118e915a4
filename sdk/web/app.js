// The page of `loom serve`: submit a job, watch its events, show and download its images.
// Plain JavaScript, no build step and nothing fetched from another host.
"use strict";

const $ = (id) => document.getElementById(id);
const tokenInput = $("token");
tokenInput.value = localStorage.getItem("loom-token") || "";
tokenInput.addEventListener("change", () => localStorage.setItem("loom-token", tokenInput.value));

let current = null; // the job being watched: {id, stop}

function headers(extra = {}) {
  const token = tokenInput.value.trim();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (e) { /* not JSON: keep the status text */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

async function loadGenerators() {
  const components = await (await api("/v1/components")).json();
  const names = components
    .filter((c) => c.kind === "generator" && c.output_type === "Image")
    .map((c) => c.name);
  const select = $("generator");
  select.replaceChildren(...[...new Set(names)].sort().map((name) => new Option(name, name, false, name === "vae")));
  showError(null);
}

function onLoadError(err) {
  showError(err);
  if (String(err.message).startsWith("401")) document.querySelector("details").open = true; // ask for the token
}

function showError(err) { $("error").textContent = err ? String(err.message || err) : ""; }
function setRunning(running) { $("submit").disabled = running; $("cancel").disabled = !running; }

// An <img> needs a URL; with a token the image is fetched with its header and shown from a blob URL.
async function imageURL(path) {
  if (!tokenInput.value.trim()) return path;
  return URL.createObjectURL(await (await api(path)).blob());
}

async function addImage(jobId, n, path) {
  const figure = document.createElement("figure"); // placed now, so that images stay in order
  const img = document.createElement("img");
  img.alt = `output ${n}`;
  const link = document.createElement("a");
  link.download = `${jobId}-${String(n).padStart(4, "0")}.png`;
  link.textContent = `download ${n}`;
  figure.append(img, link);
  $("images").append(figure);
  img.src = link.href = await imageURL(path);
}

// A generator that reports its image so far (diffusion) sends it in progress events, as often as the job asked.
function showPreview(url, n) {
  $("preview").src = url;
  $("preview-caption").textContent = `output ${n}, so far`;
  $("live").hidden = false;
}

function onEvent(jobId, type, data) {
  if (type === "queued") $("status").textContent = "Queued.";
  if (type === "started") $("status").textContent = `Running: 0 of ${data.total}.`;
  if (type === "progress") {
    $("bar").value = data.done / data.total;
    $("status").textContent = `Running: ${Math.floor(data.done)} of ${data.total}.`;
    if (data.preview) showPreview(data.preview, data.n);
  }
  if (type === "item") addImage(jobId, data.n, data.url).catch(showError);
  if (type === "item") $("live").hidden = true; // the image itself is shown now
  if (type === "finished" || type === "failed" || type === "cancelled") {
    $("live").hidden = true;
    $("status").textContent = `${type[0].toUpperCase()}${type.slice(1)}: ${data.outputs} output(s).`;
    if (type === "finished") $("bar").value = 1;
    if (data.error) showError(data.error);
    setRunning(false);
    return true; // the last event
  }
  return false;
}

// EventSource cannot send an Authorization header: with a token the stream is read with fetch instead.
function watch(jobId) {
  const path = `/v1/jobs/${jobId}/events`;
  const types = ["queued", "started", "progress", "item", "finished", "failed", "cancelled"];
  if (!tokenInput.value.trim()) {
    const source = new EventSource(path);
    for (const type of types) {
      source.addEventListener(type, (e) => { if (onEvent(jobId, type, JSON.parse(e.data))) source.close(); });
    }
    return () => source.close();
  }
  const controller = new AbortController();
  readStream(jobId, path, controller.signal).catch((err) => { if (!controller.signal.aborted) showError(err); });
  return () => controller.abort();
}

async function readStream(jobId, path, signal) {
  const response = await api(path, { signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const field = (name) => (block.split("\n").find((l) => l.startsWith(name + ": ")) || "").slice(name.length + 2);
      if (onEvent(jobId, field("event"), JSON.parse(field("data") || "{}"))) return;
    }
  }
}

function dataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

$("job").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError(null);
  if (current) current.stop();
  $("images").replaceChildren();
  $("bar").value = 0;
  const seed = $("seed").value;
  const body = {
    prompt: $("prompt").value,
    generator: $("generator").value || null,
    seed: seed === "" ? null : Number(seed),
    count: Number($("count").value || 1),
    size: Number($("size").value || 256),
    preview_every: 0.5,
  };
  if ($("strength").value !== "") body.strength = Number($("strength").value);
  try {
    const file = $("image").files[0]; // an image to start from, for a generator that edits (diffusion)
    if (file) body.image = await dataURL(file);
    const job = await (await api("/v1/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    })).json();
    setRunning(true);
    current = { id: job.id, stop: watch(job.id) };
  } catch (err) {
    showError(err);
  }
});

$("cancel").addEventListener("click", async () => {
  if (!current) return;
  try { await api(`/v1/jobs/${current.id}`, { method: "DELETE" }); } catch (err) { showError(err); }
});

loadGenerators().catch(onLoadError);
tokenInput.addEventListener("change", () => loadGenerators().catch(onLoadError));
