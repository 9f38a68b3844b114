// The page talks to the same API as any client: GET /v1/model once, POST /v1/segment per image.
"use strict";

const $ = (id) => document.getElementById(id);
let model = null;

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function loadModel() {
  for (;;) {
    const response = await fetch("/v1/model");
    if (response.ok) {
      model = await response.json();
      const unseen = model.unseen_miou === null ? "" :
        `, unseen-street mIoU ${model.unseen_miou.toFixed(2)} (${model.unseen_split})`;
      const miou = unseen + (model.val_miou === null ? "" :
        `, val mIoU ${model.val_miou.toFixed(2)}${model.val_in_training ? " (fit: trained on val)" : ""}`);
      $("model-info").textContent =
        `${model.name}: ${model.classes.length} classes${miou}; ${model.runtime} ${model.precision}` +
        (model.precision_reason ? ` (auto: ${model.precision_reason})` : "");
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));  // 503 while it loads
  }
}

async function loadSamples() {
  const names = await (await fetch("/v1/samples")).json();
  for (const name of names) {
    const button = document.createElement("button");
    button.type = "button";
    button.title = name;
    button.dataset.sample = name;
    const thumb = document.createElement("img");
    thumb.src = `/v1/samples/${encodeURIComponent(name)}`;
    thumb.alt = name;
    button.append(thumb);
    button.addEventListener("click", async () => {
      const blob = await (await fetch(thumb.src)).blob();
      segment(new File([blob], name, { type: blob.type }));
    });
    $("samples").append(button);
  }
}

// Class id of every pixel of the label image, from its palette colour.
function classShares(pixels) {
  const index = new Map(model.palette.map((c, i) => [(c[0] << 16) | (c[1] << 8) | c[2], i]));
  const counts = new Array(model.classes.length).fill(0);
  for (let p = 0; p < pixels.length; p += 4) {
    const id = index.get((pixels[p] << 16) | (pixels[p + 1] << 8) | pixels[p + 2]);
    if (id !== undefined) counts[id] += 1;
  }
  const total = pixels.length / 4;
  return counts.map((n) => n / total);
}

function showLegend(shares) {
  const body = $("legend").querySelector("tbody");
  body.replaceChildren();
  model.classes.forEach((name, i) => {
    const row = document.createElement("tr");
    row.dataset.classId = String(i);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${model.palette[i].join(",")})`;
    const label = document.createElement("td");
    label.append(swatch, name);
    const share = document.createElement("td");
    share.textContent = `${(shares[i] * 100).toFixed(1)} %`;
    row.append(label, share);
    body.append(row);
  });
}

async function segment(file) {
  if (!model) {
    setStatus("the model is still loading; try again in a moment", true);
    return;
  }
  document.body.dataset.state = "busy";
  setStatus(`segmenting ${file.name}…`);
  const form = new FormData();
  form.append("file", file, file.name);
  const start = performance.now();
  let response;
  try {
    response = await fetch("/v1/segment?format=png", { method: "POST", body: form });
  } catch (err) {
    setStatus(`the server did not answer: ${err}`, true);
    return;
  }
  const roundTrip = performance.now() - start;
  if (!response.ok) {
    const problem = await response.json().catch(() => ({ error: response.statusText }));
    document.body.dataset.state = "error";
    setStatus(`${file.name}: ${problem.error}`, true);
    return;
  }
  const labels = await createImageBitmap(await response.blob(),
    { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const url = URL.createObjectURL(file);
  $("original").src = url;
  $("overlay-base").src = url;
  const canvas = $("overlay");
  canvas.width = labels.width;
  canvas.height = labels.height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(labels, 0, 0);
  showLegend(classShares(context.getImageData(0, 0, canvas.width, canvas.height).data));
  $("latency").textContent =
    `model ${response.headers.get("X-Latency-Ms")} ms, request ${roundTrip.toFixed(0)} ms ` +
    `(${labels.width}×${labels.height})`;
  $("result").hidden = false;
  document.body.dataset.state = "done";
  setStatus(`${file.name}: done`);
}

function wireInputs() {
  $("file-input").addEventListener("change", (event) => {
    if (event.target.files.length) segment(event.target.files[0]);
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    if (event.dataTransfer.files.length) segment(event.dataTransfer.files[0]);
  });
  const opacity = $("opacity");
  const apply = () => { $("overlay").style.opacity = opacity.value; };
  opacity.addEventListener("input", apply);
  apply();
}

wireInputs();
loadModel().then(loadSamples).catch((err) => setStatus(`cannot reach the server: ${err}`, true));
