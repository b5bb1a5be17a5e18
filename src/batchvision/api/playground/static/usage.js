// The usage page: the calling key's balance and its requests, images and credits by UTC day
// (GET /v1/usage), with a bar per day for images.

import { getJson } from "./api.js";
import { $, make, say } from "./ui.js";

const COLUMNS = ["requests", "images", "credits", "uncharged_credits"];

function summary(body) {
  const entries = [
    ["key", `${body.key.name} (${body.key.prefix})`],
    ["balance", String(body.balance)],
    ...COLUMNS.map((name) => [name.replace("_", " "), String(body.totals[name])]),
  ];
  $("#usage-summary").replaceChildren(
    ...entries.flatMap(([name, value]) => [make("dt", {}, name), make("dd", { "data-field": name }, value)]),
  );
}

function chart(days) {
  const most = Math.max(1, ...days.map((day) => day.images));
  $("#usage-chart").replaceChildren(
    ...days.map((day) => {
      const bar = make("div", { class: "bar", title: `${day.date}: ${day.images} images` });
      bar.style.height = `${(100 * day.images) / most}%`;
      return make("div", { class: "day" }, bar, make("span", {}, day.date.slice(5)));
    }),
  );
}

function table(days) {
  $("#usage-table tbody").replaceChildren(
    ...days.map((day) =>
      make("tr", { "data-date": day.date }, make("td", {}, day.date), ...COLUMNS.map((n) => make("td", {}, String(day[n])))),
    ),
  );
}

export async function refreshUsage() {
  const days = Number($("#usage-days").value) || 30;
  try {
    const body = await getJson(`v1/usage?days=${days}`);
    summary(body);
    chart(body.days);
    table(body.days);
  } catch (error) {
    say(`Could not read usage: ${error.message}`, "error");
  }
}

export function initUsage() {
  $("#refresh-usage").addEventListener("click", refreshUsage);
  $("#usage-days").addEventListener("change", refreshUsage);
}
