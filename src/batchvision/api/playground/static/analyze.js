// The analyze page: choose files and a skill, run POST /v1/analyze (multipart, as curl would),
// see each result drawn on its image, the JSON response, and the equivalent curl command.

import { apiKey, getJson, request, serverBase } from "./api.js";
import { analyzeCurl } from "./curl.js";
import { drawResult } from "./draw.js";
import { ParamsForm } from "./params.js";
import { $, make, say } from "./ui.js";

const state = { files: [], skills: [], shown: null };
let form;

const isVideo = (file) => file.type.startsWith("video/");

export function chosenImages() {
  return state.files.filter((file) => !isVideo(file));
}

export function currentTask() {
  return { skill: $("#skill").value, params: form.values() };
}

function fps() {
  const value = Number($("#fps").value);
  return Number.isFinite(value) && value > 0 ? value : null;
}

function updateCurl() {
  $("#curl").textContent = analyzeCurl({
    base: serverBase(),
    files: state.files.length ? state.files : [{ name: "photo.jpg", type: "image/jpeg" }],
    tasks: [currentTask()],
    fps: fps(),
    withKey: Boolean(apiKey()),
  });
}

function syncJson() {
  $("#params-json").value = JSON.stringify(form.complete(), null, 2);
  updateCurl();
}

// A new form for a newly picked skill; picking the same one again keeps what the user typed.
function showSkill() {
  const skill = state.skills.find((s) => s.name === $("#skill").value);
  if (!skill || skill === state.shown) return;
  state.shown = skill;
  $("#skill-description").textContent = skill.description || "";
  form.show(skill);
  syncJson();
}

export async function loadSkills() {
  try {
    const body = await getJson("v1/skills");
    state.skills = body.skills;
  } catch (error) {
    say(`Could not list skills: ${error.message}`, "error");
    return;
  }
  const select = $("#skill");
  const previous = select.value || "detect";
  select.replaceChildren(...state.skills.map((s) => make("option", { value: s.name }, s.name)));
  select.value = state.skills.some((s) => s.name === previous) ? previous : state.skills[0].name;
  showSkill();
}

function choose(files) {
  state.files = Array.from(files);
  $("#chosen").replaceChildren(
    ...state.files.map((file) => make("li", {}, `${file.name} (${Math.round(file.size / 1024)} KB)`)),
  );
  $("#video-options").classList.toggle("active", state.files.some(isVideo));
  updateCurl();
}

function legendList(entries) {
  const list = make("ul", { class: "legend" });
  for (const entry of entries) {
    const swatch = make("span", { class: "swatch" });
    swatch.style.backgroundColor = entry.color;
    const item = make("li", { "data-skill": entry.skill, "data-color": entry.color });
    if (entry.empty) item.classList.add("empty");
    item.append(swatch, make("span", { class: "label" }, entry.text));
    list.append(item);
  }
  return list;
}

function errorList(errors) {
  return make("ul", { class: "errors" }, ...errors.map((e) => make("li", {}, `${e.code}: ${e.message}`)));
}

async function imageFigure(result, file) {
  const figure = make("figure", { class: "result", "data-index": String(result.index) });
  figure.append(make("figcaption", {}, `${file ? file.name : `image ${result.index}`}: ${result.status}`));
  const canvas = make("canvas", { class: "result-canvas" });
  figure.append(canvas);
  let bitmap = null;
  try {
    bitmap = file ? await createImageBitmap(file) : null;
  } catch {
    // A format the browser cannot decode (HEIC, AVIF on some builds): the server still could.
  }
  if (bitmap) {
    figure.append(legendList(drawResult(canvas, bitmap, result.outputs, result.image)));
  } else {
    canvas.remove();
    figure.append(legendList(drawResult(make("canvas"), { width: 1, height: 1 }, result.outputs, null)));
  }
  if (result.errors.length) figure.append(errorList(result.errors));
  return figure;
}

function seek(video, time) {
  return new Promise((resolve) => {
    video.addEventListener("seeked", resolve, { once: true });
    video.currentTime = time;
  });
}

async function videoFigure(result, file) {
  const figure = make("figure", { class: "result video", "data-video": String(result.index) });
  figure.append(make("figcaption", {}, `${file ? file.name : `video ${result.index}`}: ${result.status}`));
  if (result.errors.length) figure.append(errorList(result.errors));
  if (!file || !result.frames.length) return figure;
  const video = make("video", { muted: "", preload: "auto" });
  video.src = URL.createObjectURL(file);
  await new Promise((resolve) => video.addEventListener("loadeddata", resolve, { once: true }));
  const canvas = make("canvas", { class: "result-canvas" });
  const slider = make("input", { type: "range", min: "0", max: String(result.frames.length - 1), value: "0" });
  const label = make("span", { class: "muted" });
  const legend = make("div");
  const show = async () => {
    const frame = result.frames[Number(slider.value)];
    await seek(video, frame.time_s);
    label.textContent = `frame ${frame.number} at ${frame.time_s.toFixed(2)} s`;
    legend.replaceChildren(legendList(drawResult(canvas, video, frame.outputs, result.video)));
  };
  slider.addEventListener("input", show);
  figure.append(canvas, slider, label, legend);
  await show();
  return figure;
}

async function showResults(body) {
  const images = chosenImages();
  const videos = state.files.filter(isVideo);
  const figures = [];
  for (const result of body.results) figures.push(await imageFigure(result, images[result.index]));
  for (const result of body.videos || []) figures.push(await videoFigure(result, videos[result.index]));
  $("#results").replaceChildren(...figures);
}

function formData() {
  const data = new FormData();
  for (const file of state.files) data.append(isVideo(file) ? "videos" : "images", file, file.name);
  data.append("tasks", JSON.stringify([currentTask()]));
  if (state.files.some(isVideo) && fps() !== null) data.append("fps", String(fps()));
  return data;
}

function summary({ images, succeeded, failed, videos, videos_failed: videosFailed }) {
  const parts = images ? [`${images} images, ${succeeded} ok, ${failed} failed`] : [];
  if (videos) parts.push(`${videos} videos, ${videosFailed} failed`);
  return parts.join("; ");
}

async function run() {
  if (!state.files.length) {
    say("Choose an image or a video first.", "error");
    return;
  }
  const button = $("#run");
  button.disabled = true;
  $("#results").replaceChildren(); // an answer shown must be this request's
  say("Running…");
  try {
    const response = await request("v1/analyze", { method: "POST", body: formData() });
    const body = await response.json();
    $("#json").textContent = JSON.stringify(body, null, 2);
    await showResults(body);
    say(`Done in ${Math.round(body.timings_ms.total)} ms: ${summary(body.summary)}.`);
  } catch (error) {
    $("#json").textContent = error.message;
    say(error.message, "error");
  } finally {
    button.disabled = false;
  }
}

async function copyCurl() {
  const text = $("#curl").textContent;
  try {
    await navigator.clipboard.writeText(text);
    say("Copied the curl command.");
  } catch {
    // No clipboard permission (a plain-HTTP page on another host): select it for Ctrl-C.
    getSelection().selectAllChildren($("#curl"));
    say("Select-all done: press Ctrl-C to copy the curl command.");
  }
}

function applyJson() {
  try {
    form.apply(JSON.parse($("#params-json").value || "{}"));
  } catch (error) {
    say(`Parameters are not valid JSON: ${error.message}`, "error");
    return;
  }
  syncJson();
}

function wireDrop() {
  const zone = $("#drop");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    choose(event.dataTransfer.files);
  });
  $("#files").addEventListener("change", (event) => choose(event.target.files));
}

export function initAnalyze() {
  form = new ParamsForm($("#params"));
  wireDrop();
  $("#skill").addEventListener("change", showSkill);
  $("#params").addEventListener("input", syncJson);
  $("#params").addEventListener("submit", (event) => event.preventDefault());
  $("#fps").addEventListener("input", updateCurl);
  $("#apply-json").addEventListener("click", applyJson);
  $("#run").addEventListener("click", run);
  $("#copy-curl").addEventListener("click", copyCurl);
  updateCurl();
}
