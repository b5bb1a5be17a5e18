// The jobs page: submit a JSONL file (POST /v1/jobs), list GET /v1/jobs with progress bars that
// refresh every second while a job runs, cancel, and download results.

import { getJson, request } from "./api.js";
import { chosenImages, currentTask } from "./analyze.js";
import { $, make, say } from "./ui.js";

const ACTIVE = new Set(["chunking", "processing"]);
const POLL_MS = 1000;
const state = { jobs: [], cursor: null, loadedMore: false, timer: null, visible: false };

function progressCell(job) {
  const { total, completed, failed } = job.progress;
  const done = completed + failed;
  const bar = make("progress", { max: String(Math.max(total, 1)), value: String(done) });
  const text = make("span", { class: "progress-text" }, `${done}/${total}${failed ? ` (${failed} failed)` : ""}`);
  return make("td", { class: "progress" }, bar, text);
}

async function downloadResults(job) {
  try {
    const response = await request(`v1/jobs/${job.id}/results`);
    const link = make("a", { href: URL.createObjectURL(await response.blob()), download: `${job.id}.jsonl` });
    link.click();
    URL.revokeObjectURL(link.href);
  } catch (error) {
    say(error.message, "error");
  }
}

async function cancel(job) {
  try {
    await request(`v1/jobs/${job.id}/cancel`, { method: "POST" });
    say(`Cancelling ${job.id}; finished lines are kept.`);
  } catch (error) {
    say(error.message, "error");
  }
  await refreshJobs();
}

function actionsCell(job) {
  const cell = make("td", { class: "actions" });
  if (ACTIVE.has(job.status) && !job.cancel_requested) {
    const button = make("button", { type: "button", class: "cancel" }, "Cancel");
    button.addEventListener("click", () => cancel(job));
    cell.append(button);
  }
  const results = make("button", { type: "button", class: "results" }, "Results");
  results.addEventListener("click", () => downloadResults(job));
  cell.append(results);
  // Output files are signed links: they work without the key, so they are plain anchors.
  for (const output of job.outputs) {
    cell.append(make("a", { class: "download", href: output.url, download: "" }, `file ${output.index + 1}`));
  }
  return cell;
}

function row(job) {
  const status = make("td", { class: `state state-${job.status}` }, job.status);
  if (job.error) {
    status.title = job.error.message;
    status.append(make("small", { class: "error-code" }, ` (${job.error.code})`));
  }
  return make(
    "tr",
    { "data-job-id": job.id, "data-status": job.status },
    make("td", { class: "id" }, make("code", {}, job.id)),
    status,
    progressCell(job),
    make("td", {}, String(job.usage.images)),
    make("td", {}, new Date(job.created_at).toLocaleString()),
    actionsCell(job),
  );
}

function render() {
  $("#jobs-table tbody").replaceChildren(...state.jobs.map(row));
  $("#more-jobs").hidden = state.cursor === null;
}

// Polls count against the key's request rate like any request: a 429 waits out its Retry-After.
function schedule(delayMs = POLL_MS) {
  clearTimeout(state.timer);
  const watching = state.visible && document.visibilityState === "visible";
  if (watching && state.jobs.some((job) => ACTIVE.has(job.status))) {
    state.timer = setTimeout(refreshJobs, delayMs);
  }
}

export async function refreshJobs() {
  try {
    const page = await getJson("v1/jobs");
    // Rows of further pages the user loaded stay below the refreshed first page.
    const ids = new Set(page.jobs.map((job) => job.id));
    const older = state.loadedMore ? state.jobs.filter((job) => !ids.has(job.id)) : [];
    state.jobs = [...page.jobs, ...older];
    if (!state.loadedMore) state.cursor = page.next_cursor;
    render();
  } catch (error) {
    say(`Could not list jobs: ${error.message}`, "error");
    if (error.retryAfter) {
      schedule(error.retryAfter * 1000);
      return;
    }
  }
  schedule();
}

async function loadMore() {
  try {
    const page = await getJson(`v1/jobs?cursor=${encodeURIComponent(state.cursor)}`);
    state.jobs.push(...page.jobs);
    state.loadedMore = true;
    state.cursor = page.next_cursor;
    render();
  } catch (error) {
    say(error.message, "error");
  }
}

async function submit() {
  const file = $("#job-file").files[0];
  const body = file || $("#job-lines").value;
  if (!body || (typeof body === "string" && !body.trim())) {
    say("Choose a JSONL file or paste some lines first.", "error");
    return;
  }
  try {
    const response = await request("v1/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/jsonl" },
      body,
    });
    const job = await response.json();
    say(`Submitted job ${job.id} (${job.size} bytes).`);
    $("#jobs-table").dataset.submitted = job.id;
    $("#job-file").value = "";
    $("#job-lines").value = "";
  } catch (error) {
    say(error.message, "error");
  }
  await refreshJobs();
}

function base64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// One line per image chosen on the analyze page, with that page's skill and parameters.
async function linesFromImages() {
  const images = chosenImages();
  if (!images.length) {
    say("Choose images on the Analyze page first.", "error");
    return;
  }
  const { skill, params } = currentTask();
  const lines = [];
  for (const file of images) {
    lines.push(JSON.stringify({ id: file.name, skill, image: await base64(file), ...params }));
  }
  $("#job-lines").value = `${lines.join("\n")}\n`;
  say(`${lines.length} lines ready: press Submit.`);
}

export function showJobs(visible) {
  state.visible = visible;
  if (visible) refreshJobs();
  else clearTimeout(state.timer);
}

export function initJobs() {
  document.addEventListener("visibilitychange", () => state.visible && refreshJobs());
  $("#submit-job").addEventListener("click", submit);
  $("#refresh-jobs").addEventListener("click", refreshJobs);
  $("#more-jobs").addEventListener("click", loadMore);
  $("#job-from-images").addEventListener("click", linesFromImages);
}
