// The labelling page: one image at a time; number keys pick a class, arrows move, U undoes.
// Multi-label batches: one checkbox per finding plus "No Finding" (exclusive); number keys
// toggle (0: No Finding), Space saves the set of the image shown.
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const SEPARATOR = "|";
let batch = null;
let at = 0;
const ticked = {};  // multi-label: image -> the findings ticked and not yet saved
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

function render() {
  const item = batch.images[at];
  const done = batch.images.filter((i) => i.label !== null).length;
  $("progress").textContent = `${done} / ${batch.images.length} labelled`;
  $("title").textContent = `round ${batch.round} · ${batch.annotator}`;
  $("where").textContent = `image ${at + 1} of ${batch.images.length}`;
  $("image").src = `image/${encodeURIComponent(item.image)}?token=${encodeURIComponent(token)}`;
  $("image").className = item.label === null ? "" : "labelled";
  $("suggestion").textContent = item.suggestion
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
  $("done").disabled = done < batch.images.length;
}

function move(step) {
  at = Math.min(Math.max(at + step, 0), batch.images.length - 1);
  render();
}

async function choose(label) {
  const item = batch.images[at];
  try {
    await api("api/label", { image: item.image, label });
    item.label = label;
    say("");
    const next = batch.images.findIndex((i, k) => k > at && i.label === null);
    const any = batch.images.findIndex((i) => i.label === null);
    at = next >= 0 ? next : any >= 0 ? any : at;
    render();
    if (any < 0) say("every image is labelled: press done (Enter)");
  } catch (err) { say(err.message); }
}

function selection(item) {
  if (!ticked[item.image]) {
    ticked[item.image] = new Set(item.label === null ? [] : item.label.split(SEPARATOR));
  }
  return ticked[item.image];
}

function toggle(name) {
  const set = selection(batch.images[at]);
  if (set.has(name)) set.delete(name);
  else {
    if (name === batch.no_finding) set.clear();  // "No Finding" excludes every finding
    else set.delete(batch.no_finding);
    set.add(name);
  }
  render();
}

function save() {
  const set = selection(batch.images[at]);
  if (set.size === 0) { say(`tick the findings, or ${batch.no_finding}`); return; }
  const names = [...batch.classes, batch.no_finding].filter((n) => set.has(n));
  delete ticked[batch.images[at].image];
  choose(names.join(SEPARATOR));
}

async function undo() {
  try {
    const data = await api("api/undo", {});
    if (data.image === null) { say("nothing to undo"); return; }
    const k = batch.images.findIndex((i) => i.image === data.image);
    batch.images[k].label = null;
    at = k;
    say(`undone: image ${k + 1}`);
    render();
  } catch (err) { say(err.message); }
}

async function finish() {
  try {
    await api("api/done", {});
    document.body.innerHTML = "<main><h1>Done: thank you.</h1><p>The labels are saved. " +
      "Continue the run with the same <code>python -m al_sim.run</code> command.</p></main>";
  } catch (err) { say(err.message); }
}

async function start() {
  try { batch = await api("api/batch"); } catch (err) { say(err.message); return; }
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
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
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
