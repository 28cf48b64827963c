// The demo page: draw on #pad, classify with lenet-digits on every stroke.
//
// Query parameters (the page's test drives them):
//   model=URL     the .wasm (default: the portable build under dist/)
//   strokes=JSON  a drawing to classify at once: a list of polylines, each a
//                 list of [x, y] points in 0..1 (fractions of the pad)

import { argmax, engineFeatures, load } from "./wasmforge.js";
import { bitmap, digitImage, modelInput, SIDE } from "./digits.js";

const DEFAULT_MODEL = "../dist/lenet-digits-simd128/lenet-digits-simd128.wasm";
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ink = pad.getContext("2d", { willReadFrequently: true });
let model = null;

function setStatus(text, kind = "info") {
  $("status").textContent = text;
  $("status").dataset.kind = kind;
}

function brush() {
  ink.lineWidth = pad.width / 8;
  ink.lineCap = "round";
  ink.lineJoin = "round";
  ink.strokeStyle = "#000";
}

function clear() {
  ink.clearRect(0, 0, pad.width, pad.height);
  $("digit").textContent = "";
  $("pixels").textContent = "";
  $("preview").getContext("2d").clearRect(0, 0, SIDE, SIDE);
}

function drawStrokes(strokes) {
  brush();
  for (const line of strokes) {
    ink.beginPath();
    line.forEach(([x, y], i) => (i ? ink.lineTo : ink.moveTo).call(ink, x * pad.width, y * pad.height));
    if (line.length === 1) ink.lineTo(line[0][0] * pad.width + 0.1, line[0][1] * pad.height);
    ink.stroke();
  }
}

function showImage(image) {
  const preview = $("preview").getContext("2d");
  const data = preview.createImageData(SIDE, SIDE);
  image.forEach((p, i) => {
    const v = 255 - Math.round((p / 16) * 255);
    data.data.set([v, v, v, 255], 4 * i);
  });
  preview.putImageData(data, 0, 0);
  const rows = [];
  for (let y = 0; y < SIDE; y++) rows.push(image.slice(y * SIDE, (y + 1) * SIDE).map((p) => String(p).padStart(2)).join(" "));
  $("pixels").textContent = rows.join("\n");
}

function classify() {
  if (!model) return;
  const image = digitImage(bitmap(pad));
  showImage(image);
  if (image.every((p) => p === 0)) return;
  const [logits] = model.run([modelInput(image)]);
  $("digit").textContent = String(argmax(logits));
  document.body.dataset.state = "done";
}

function listen() {
  let drawing = false;
  const at = (e) => {
    const r = pad.getBoundingClientRect();
    return [((e.clientX - r.left) * pad.width) / r.width, ((e.clientY - r.top) * pad.height) / r.height];
  };
  pad.addEventListener("pointerdown", (e) => {
    drawing = true;
    pad.setPointerCapture(e.pointerId);
    brush();
    ink.beginPath();
    ink.moveTo(...at(e));
  });
  pad.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    ink.lineTo(...at(e));
    ink.stroke();
  });
  const end = () => {
    if (drawing) classify();
    drawing = false;
  };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", clear);
}

async function main() {
  const url = params.get("model") || DEFAULT_MODEL;
  $("model").textContent = url;
  try {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`cannot fetch ${url}: HTTP ${response.status}`);
    model = await load(await response.arrayBuffer());
  } catch (error) {
    const supported = Object.entries(engineFeatures()).filter(([, ok]) => ok).map(([name]) => name);
    setStatus(`error: ${error.message} (this browser supports: ${supported.join(", ") || "no SIMD"})`, "error");
    document.body.dataset.state = "error";
    return;
  }
  $("features").textContent = model.info.features.join(", ");
  $("preprocessing").textContent = model.info.preprocessing ?? "(not recorded)";
  document.body.dataset.state = "ready";
  listen();
  const strokes = params.get("strokes");
  if (strokes) {
    drawStrokes(JSON.parse(strokes));
    classify();
  }
}

main();
