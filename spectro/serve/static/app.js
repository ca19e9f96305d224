// The page of `spectro serve`: upload or record a recording, POST it to v1/predict, show the answer.
// Plain JavaScript, no build step, nothing fetched but this server's own API (relative URLs, so the page
// also works behind a reverse proxy under a sub-path).
"use strict";

const $ = (id) => document.getElementById(id);
const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#bab0ac"];
const CHANNELS = {
  deltas: "red: log-mel, green: its delta, blue: delta-delta",
  grey: "log-mel in grey",
  colormap: "log-mel through a colour map",
};
let classes = [];
let recorder = null;

function authorised(headers = {}) {
  const token = $("token").value.trim();
  return token ? {...headers, Authorization: `Bearer ${token}`} : headers;
}

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
}

function colour(label) {
  const index = classes.indexOf(label);
  return PALETTE[(index < 0 ? classes.length : index) % PALETTE.length];
}

async function loadModel() {
  try {
    const response = await fetch("v1/model", {headers: authorised()});
    const model = await response.json();
    if (!response.ok) {
      $("model").textContent = response.status === 401 ? "This server needs a token: enter it on the right."
        : `The model could not be read: ${model.error}`;
      return;
    }
    classes = model.classes;
    const picture = model.ensemble ? model.members[0].inputs : model.inputs;
    const channels = Object.values(picture)[0].image.channels;
    $("picture-caption").textContent = CHANNELS[channels] || "";
    $("model").textContent = `${model.model}: ${model.classes.join(", ")}; trained on ` +
      `${model.train_corpora.join(", ") || "unnamed corpora"}`;
  } catch (error) {
    $("model").textContent = `The server did not answer: ${error}`;
  }
}

async function predict(blob, name) {
  setStatus("busy", `Scoring ${name}…`);
  const form = new FormData();
  form.append("file", blob, name);
  let response, answer;
  try {
    response = await fetch("v1/predict?picture=1", {method: "POST", headers: authorised(), body: form});
    answer = await response.json();
  } catch (error) {
    setStatus("error", `The server did not answer: ${error}`);
    return;
  }
  if (!response.ok) {
    setStatus("error", `${name}: ${answer.error || response.statusText} (HTTP ${response.status})`);
    return;
  }
  show(answer, name);
  const top = answer.top_k[0];
  setStatus("done", `${name}: ${top.label} (${top.score.toFixed(3)})`);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function showBars(probabilities, label) {
  const bars = $("bars");
  bars.replaceChildren();
  for (const [name, score] of Object.entries(probabilities)) {
    const row = element("div", "bar-row" + (name === label ? " top" : ""));
    row.dataset.label = name;
    row.dataset.score = String(score);
    const fill = element("span", "fill");
    fill.style.width = `${(100 * score).toFixed(1)}%`;
    fill.style.background = colour(name);
    const track = element("span", "track");
    track.append(fill);
    row.append(element("span", "name", name), track, element("span", "value", score.toFixed(3)));
    bars.append(row);
  }
}

function showTimeline(windows) {
  const timeline = $("timeline");
  timeline.replaceChildren();
  $("legend").replaceChildren();
  if (!windows) {
    $("timeline-axis").textContent = "An ensemble's members read different windows: no per-window results.";
    return;
  }
  for (const w of windows) {
    const score = w.probabilities[w.label];
    const bar = element("div", "window");
    Object.assign(bar.dataset, {label: w.label, start: w.start, end: w.end, score});
    bar.style.height = `${Math.max(4, 100 * score).toFixed(1)}%`;
    bar.style.background = colour(w.label);
    bar.title = `${w.start.toFixed(2)}-${w.end.toFixed(2)} s: ${w.label} ${score.toFixed(3)}`;
    timeline.append(bar);
  }
  const last = windows[windows.length - 1];
  $("timeline-axis").textContent = `${windows[0].start.toFixed(2)} s … ${last.end.toFixed(2)} s, ` +
    `${windows.length} window${windows.length === 1 ? "" : "s"}`;
  for (const name of classes) {
    const key = element("span", "key", name);
    key.style.setProperty("--swatch", colour(name));
    $("legend").append(key);
  }
}

function show(answer, name) {
  $("result").hidden = false;
  $("source").textContent = name;
  $("label").textContent = answer.label;
  $("label").dataset.label = answer.label;
  $("label").style.color = colour(answer.label);
  showBars(answer.probabilities, answer.label);
  showTimeline(answer.windows);
  $("picture").src = answer.picture || "";
}

// A recording the server cannot decode (WebM from Chrome's MediaRecorder) becomes a 16-bit mono WAV here.
async function toWav(blob) {
  const context = new AudioContext();
  try {
    const audio = await context.decodeAudioData(await blob.arrayBuffer());
    const mono = new Float32Array(audio.length);
    for (let c = 0; c < audio.numberOfChannels; c++) {
      audio.getChannelData(c).forEach((v, i) => { mono[i] += v / audio.numberOfChannels; });
    }
    const view = new DataView(new ArrayBuffer(44 + 2 * mono.length));
    const text = (offset, s) => [...s].forEach((ch, i) => view.setUint8(offset + i, ch.charCodeAt(0)));
    text(0, "RIFF"); view.setUint32(4, 36 + 2 * mono.length, true); text(8, "WAVEfmt ");
    view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
    view.setUint32(24, audio.sampleRate, true); view.setUint32(28, 2 * audio.sampleRate, true);
    view.setUint16(32, 2, true); view.setUint16(34, 16, true); text(36, "data");
    view.setUint32(40, 2 * mono.length, true);
    mono.forEach((v, i) => view.setInt16(44 + 2 * i, Math.max(-1, Math.min(1, v)) * 0x7fff, true));
    return new Blob([view], {type: "audio/wav"});
  } finally {
    context.close();
  }
}

async function record() {
  if (recorder) {
    recorder.stop();
    return;
  }
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    setStatus("error", "This browser cannot record here (the microphone needs https or localhost).");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({audio: true});
  } catch (error) {
    setStatus("error", `No microphone: ${error.message}`);
    return;
  }
  const ogg = MediaRecorder.isTypeSupported("audio/ogg;codecs=opus");  // the server decodes Ogg Opus as sent
  recorder = new MediaRecorder(stream, ogg ? {mimeType: "audio/ogg;codecs=opus"} : {});
  const chunks = [];
  recorder.ondataavailable = (event) => chunks.push(event.data);
  recorder.onstop = async () => {
    stream.getTracks().forEach((track) => track.stop());
    const blob = new Blob(chunks, {type: recorder.mimeType});
    recorder = null;
    $("record").textContent = "● Record";
    $("record").classList.remove("recording");
    try {
      await (ogg ? predict(blob, "recording.ogg") : predict(await toWav(blob), "recording.wav"));
    } catch (error) {
      setStatus("error", `The recording could not be read: ${error}`);
    }
  };
  recorder.start();
  $("record").textContent = "■ Stop";
  $("record").classList.add("recording");
  setStatus("busy", "Recording… press Stop when done.");
}

$("token").value = sessionStorage.getItem("spectro-token") || "";
$("token").addEventListener("change", () => {
  sessionStorage.setItem("spectro-token", $("token").value.trim());
  loadModel();
});
$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (file) predict(file, file.name);
  $("file").value = "";
});
$("record").addEventListener("click", record);
$("drop").addEventListener("dragover", (event) => { event.preventDefault(); $("drop").classList.add("over"); });
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (event) => {
  event.preventDefault();
  $("drop").classList.remove("over");
  const file = event.dataTransfer.files[0];
  if (file) predict(file, file.name);
});
loadModel();
