// The playground's entry point: the API key, the three pages (by URL hash) and their start-up.

import { apiKey, saveKey } from "./api.js";
import { initAnalyze, loadSkills } from "./analyze.js";
import { initJobs, showJobs } from "./jobs.js";
import { $, say } from "./ui.js";
import { initUsage, refreshUsage } from "./usage.js";

const PAGES = ["analyze", "jobs", "usage"];

function showPage() {
  const wanted = location.hash.slice(1);
  const page = PAGES.includes(wanted) ? wanted : "analyze";
  for (const name of PAGES) {
    $(`#page-${name}`).hidden = name !== page;
    $(`nav a[data-page="${name}"]`).classList.toggle("current", name === page);
  }
  showJobs(page === "jobs");
  if (page === "usage") refreshUsage();
}

function showKeyState() {
  const key = apiKey();
  $("#key-state").textContent = key ? `saved (${key.split("_").slice(0, 2).join("_")}…)` : "no key";
}

function initKey() {
  $("#api-key").value = apiKey();
  showKeyState();
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    saveKey($("#api-key").value.trim());
    showKeyState();
    say("Key saved in this browser.");
    loadSkills();
    showPage();
  });
  $("#forget-key").addEventListener("click", () => {
    saveKey("");
    $("#api-key").value = "";
    showKeyState();
    say("Key removed from this browser.");
  });
}

initKey();
initAnalyze();
initJobs();
initUsage();
window.addEventListener("hashchange", showPage);
showPage();
loadSkills();
