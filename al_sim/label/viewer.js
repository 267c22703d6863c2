// The slice viewer for volume items (CT/MRI): the wheel and the up/down arrows scroll the
// slices, A/C/S (or the buttons) switch between the axial, coronal and sagittal planes, and
// window/level comes from a preset or centre/width fields (empty: the volume's own range).
// Each slice is a PNG from api/slice; page.js asks volumeSrc() for the image of a volume item.
// A greyscale 2D DICOM image comes as a volume of one slice: window/level only, its own
// window (item.window) until the expert picks another.
"use strict";
const view = { plane: "axial", index: {}, centre: "", width: "", redraw: () => {} };
const PLANE_KEYS = { a: "axial", c: "coronal", s: "sagittal" };

function sliceIndex(item) {
  const axis = batchPlanes().indexOf(view.plane);
  const key = `${item.image}/${view.plane}`;
  if (!(key in view.index)) view.index[key] = Math.floor(item.volume[axis] / 2);
  return view.index[key];
}

function batchPlanes() { return ["axial", "coronal", "sagittal"]; }

function volumeSrc(item, token) {
  const q = new URLSearchParams({ image: item.image, plane: view.plane,
    index: String(sliceIndex(item)), token });
  if (view.centre !== "" && view.width !== "") {
    q.set("centre", view.centre);
    q.set("width", view.width);
  } else if (item.window) {  // the file's own window (a 2D DICOM image's), as the model sees it
    q.set("centre", String(item.window[0]));
    q.set("width", String(item.window[1]));
  }
  return `api/slice?${q}`;
}

function viewerShow(item) {  // the controls, and where in the volume we are
  const box = document.getElementById("viewer");
  box.style.display = item && item.volume ? "flex" : "none";
  if (!item || !item.volume) return;
  const flat = item.volume[0] === 1;  // a 2D image: window/level only
  if (flat) view.plane = "axial";
  const axis = batchPlanes().indexOf(view.plane);
  document.getElementById("slice").textContent = flat ? "window/level"
    : `${view.plane} slice ${sliceIndex(item) + 1} / ${item.volume[axis]}`;
  for (const b of box.querySelectorAll("button[data-plane]")) {
    b.classList.toggle("chosen", b.dataset.plane === view.plane);
    b.style.display = flat ? "none" : "";
  }
}

function scroll(item, step) {
  const axis = batchPlanes().indexOf(view.plane);
  const key = `${item.image}/${view.plane}`;
  view.index[key] = Math.min(Math.max(sliceIndex(item) + step, 0), item.volume[axis] - 1);
  view.redraw();
}

function setPlane(plane) { view.plane = plane; view.redraw(); }

function viewerKey(event, item) {  // true: the key was the viewer's
  if (!item || !item.volume || item.volume[0] === 1) return false;
  if (event.key === "ArrowUp") scroll(item, 1);
  else if (event.key === "ArrowDown") scroll(item, -1);
  else if (event.key.toLowerCase() in PLANE_KEYS) setPlane(PLANE_KEYS[event.key.toLowerCase()]);
  else return false;
  return true;
}

function viewerSetup(windows, current, redraw) {  // current(): the item on screen
  view.redraw = redraw;
  const presets = document.getElementById("preset");
  for (const [name, [centre, width]] of Object.entries(windows)) {
    const option = document.createElement("option");
    option.value = `${centre},${width}`;
    option.textContent = name;
    presets.append(option);
  }
  const fields = () => {
    view.centre = document.getElementById("centre").value.trim();
    view.width = document.getElementById("width").value.trim();
    redraw();
  };
  presets.addEventListener("change", () => {
    const [centre, width] = presets.value ? presets.value.split(",") : ["", ""];
    document.getElementById("centre").value = centre;
    document.getElementById("width").value = width;
    fields();
  });
  for (const id of ["centre", "width"]) {
    document.getElementById(id).addEventListener("change", fields);
    document.getElementById(id).addEventListener("keydown", (e) => e.stopPropagation());
  }
  for (const b of document.querySelectorAll("#viewer button[data-plane]")) {
    b.addEventListener("click", () => setPlane(b.dataset.plane));
  }
  document.getElementById("image").addEventListener("wheel", (event) => {
    const item = current();
    if (!item || !item.volume) return;
    event.preventDefault();
    scroll(item, event.deltaY < 0 ? 1 : -1);
  }, { passive: false });
}
