// The labelling page: one image at a time; number keys pick a class, arrows move, U undoes.
// Multi-label batches: one checkbox per finding plus "No Finding" (exclusive); number keys
// toggle (0: No Finding), Space saves the set of the image shown.
// A key acts on the image on screen when it is pressed: the page updates at once and the
// requests follow one at a time, in key order, each naming its image.
// Named annotators: each token sees only its own images and answers; the adjudicator sees the
// flagged images with the readers' answers, once the readers are done (the page polls till then).
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const SEPARATOR = "|";
let batch = null;
let answered = [];  // images in the order they were answered: undo takes the last
let at = 0;
const ticked = {};  // multi-label: image -> the findings ticked and not yet saved
let queue = Promise.resolve();
let waiting = 0;  // requests queued or in flight
const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const opts = { headers: { "X-Token": token } };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const response = await fetch(path, opts);
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function say(text) { $("status").textContent = text || ""; }

let unsaved = false;  // a request was refused or failed: the page shows the server's answers again

function saving(step) {
  waiting += step;
  $("saved").textContent = unsaved ? "NOT saved" : waiting ? "saving…" : "saved";
}

function send(path, body) {
  saving(1);
  const run = queue.then(() => api(path, body)).finally(() => saving(-1));
  queue = run.catch(() => {});
  return run;
}

function labelledCount() { return batch.images.filter((i) => i.label !== null).length; }

async function reload() {
  const fresh = await send("api/batch");
  batch.images = fresh.images;
  batch.waiting = fresh.waiting;
  answered = fresh.answered;
  at = Math.min(at, Math.max(batch.images.length - 1, 0));
  render();
}

function synced(data) {  // another page or an import changed the answers: show them
  if (waiting === 0 && data.labelled !== labelledCount()) reload().catch((err) => say(err.message));
}

function failed(err) {
  unsaved = true;
  saving(0);
  say(`not saved: ${err.message}`);
  reload().then(() => { unsaved = false; saving(0); }, () => {});
}

const POLL_MS = 2000;  // the adjudicator's page asks again while the readers are not done

function empty() {  // nothing to label (yet): the adjudicator waits, or nothing was flagged
  $("where").textContent = batch.waiting || "nothing to answer here: press done (Enter)";
  $("image").style.visibility = "hidden";
  viewerShow(null);
  for (const id of ["prev", "next", "undo"]) $(id).disabled = true;
  $("done").disabled = Boolean(batch.waiting);
  if (batch.waiting) setTimeout(() => reload().catch((err) => say(err.message)), POLL_MS);
}

function render() {
  const item = batch.images[at];
  const done = labelledCount();
  const role = batch.role === "adjudicator" ? " (adjudicator)" : "";
  $("progress").textContent = `${done} / ${batch.images.length} labelled`;
  $("title").textContent = `round ${batch.round} · ${batch.annotator}${role}`;
  if (item === undefined) { empty(); return; }
  $("image").style.visibility = "visible";
  $("where").textContent = `image ${at + 1} of ${batch.images.length}`;
  $("image").src = item.volume ? volumeSrc(item, token)
    : `image/${encodeURIComponent(item.image)}?token=${encodeURIComponent(token)}`;
  viewerShow(item);
  $("image").className = item.label === null ? "" : "labelled";
  $("suggestion").textContent = item.answers ? `readers: ${item.answers}` : item.suggestion
    ? `model suggests: ${item.suggestion.label} (${(item.suggestion.confidence * 100).toFixed(0)}%)`
    : "";
  for (const button of document.querySelectorAll("#classes button")) {
    button.classList.toggle("chosen", button.dataset.label === item.label);
  }
  if (batch.multilabel) {
    const set = selection(item);
    for (const box of document.querySelectorAll("#classes input")) {
      box.checked = set.has(box.dataset.label);
      box.parentElement.classList.toggle("ticked", box.checked);
    }
  }
  $("prev").disabled = at === 0;
  $("next").disabled = at === batch.images.length - 1;
  $("undo").disabled = answered.length === 0;
  $("done").disabled = done < batch.images.length;
}

function move(step) {
  if (batch.images.length === 0) return;
  at = Math.min(Math.max(at + step, 0), batch.images.length - 1);
  render();
}

function choose(label) {
  if (batch.images.length === 0) return;
  const item = batch.images[at];  // the image on screen now, whatever is still in flight
  item.label = label;
  answered = answered.filter((image) => image !== item.image).concat([item.image]);
  const next = batch.images.findIndex((i, k) => k > at && i.label === null);
  const any = batch.images.findIndex((i) => i.label === null);
  at = next >= 0 ? next : any >= 0 ? any : at;
  say(any < 0 ? "every image is labelled: press done (Enter)" : "");
  render();
  send("api/label", { image: item.image, label }).then(synced, failed);
}

function selection(item) {  // multi-label: the ticks on screen (unsaved ones, else the answer)
  return ticked[item.image] || new Set(item.label === null ? [] : item.label.split(SEPARATOR));
}

function toggle(name) {
  if (batch.images.length === 0) return;
  const item = batch.images[at];
  const set = new Set(selection(item));
  if (set.has(name)) set.delete(name);
  else {
    if (name === batch.no_finding) set.clear();  // "No Finding" excludes every finding
    else set.delete(batch.no_finding);
    set.add(name);
  }
  ticked[item.image] = set;
  render();
}

function save() {  // multi-label: the ticked set, through choose (queued, naming its image)
  if (batch.images.length === 0) return;
  const item = batch.images[at];
  const set = selection(item);
  if (set.size === 0) { say(`tick the findings, or ${batch.no_finding}`); return; }
  const names = [...batch.classes, batch.no_finding].filter((n) => set.has(n));
  delete ticked[item.image];
  choose(names.join(SEPARATOR));
}

function undo() {
  const image = answered.pop();
  if (image === undefined) { say("nothing to undo"); return; }
  const k = batch.images.findIndex((i) => i.image === image);
  batch.images[k].label = null;
  delete ticked[image];
  at = k;
  say(`undone: image ${k + 1}`);
  render();
  send("api/undo", { image }).then(synced, failed);
}

async function finish() {
  try {
    const reply = await send("api/done", {});
    document.body.innerHTML = "<main><h1>Done: thank you.</h1><p>The labels are saved. " +
      (reply.complete === false ? "The other annotators are still at work."
        : "Continue the run with the same <code>python -m al_sim.run</code> command.") +
      "</p></main>";
  } catch (err) { say(err.message); }
}

async function start() {
  try { batch = await api("api/batch"); } catch (err) { say(err.message); return; }
  answered = batch.answered;
  if (batch.multilabel) {
    document.body.classList.add("multilabel");
    [...batch.classes, batch.no_finding].forEach((name, k) => {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.dataset.label = name;
      box.addEventListener("change", () => toggle(name));
      const key = name === batch.no_finding ? 0 : k + 1;
      label.append(box);
      label.insertAdjacentHTML("beforeend", key <= 9 ? `<kbd>${key}</kbd>` : "");
      label.append(name);
      $("classes").append(label);
    });
  } else {
    batch.classes.forEach((name, k) => {
      const button = document.createElement("button");
      button.dataset.label = name;
      button.innerHTML = k < 9 ? `<kbd>${k + 1}</kbd>` : "";
      button.append(name);
      button.addEventListener("click", () => choose(name));
      $("classes").append(button);
    });
  }
  const first = batch.images.findIndex((i) => i.label === null);
  at = first >= 0 ? first : 0;
  $("prev").addEventListener("click", () => move(-1));
  $("next").addEventListener("click", () => move(1));
  $("undo").addEventListener("click", undo);
  $("save").addEventListener("click", save);
  $("done").addEventListener("click", finish);
  viewerSetup(batch.windows || {}, () => batch.images[at], render);
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (viewerKey(event, batch.images[at])) { event.preventDefault(); return; }
    const k = Number.parseInt(event.key, 10);
    if (batch.multilabel && k === 0) toggle(batch.no_finding);
    else if (batch.multilabel && k >= 1 && k <= Math.min(9, batch.classes.length)) {
      toggle(batch.classes[k - 1]);
    } else if (batch.multilabel && event.key === " ") save();
    else if (k >= 1 && k <= Math.min(9, batch.classes.length)) choose(batch.classes[k - 1]);
    else if (event.key === "ArrowLeft") move(-1);
    else if (event.key === "ArrowRight") move(1);
    else if (event.key === "u" || event.key === "U" || event.key === "Backspace") undo();
    else if (event.key === "Enter") finish();
    else return;
    event.preventDefault();
  });
  render();
}

start();
