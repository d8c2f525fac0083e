// Logs: the recent-logs search with its filters, pages through `next_cursor`, and a live tail
// that reloads the newest page every few seconds while it is shown.

import { get } from "./api.js";
import { empty, h, table, when } from "./dom.js";
import { invocationPanel, requestLabel } from "./invocation.js";

// "error,exception": console errors and exceptions together (the API takes a list of levels).
const LEVELS = ["", "debug", "info", "log", "warn", "error", "exception", "error,exception"];
const LABELS = { "": "any level", "error,exception": "error or exception" };
const LIVE_MS = 5000;
const filters = { level: "", q: "", release: "", environment: "", live: false };

export async function logs(ctx) {
  const out = h("div", { "data-view-part": "logs" });
  const pages = [null];  // the cursors of the pages seen, null for the newest
  const level = h("select", { name: "level", "aria-label": "level" },
    LEVELS.map((l) => h("option", { value: l, selected: l === filters.level }, LABELS[l] ?? l)));
  const q = h("input", { name: "q", type: "search", placeholder: "text in the message",
    value: filters.q, "aria-label": "search" });
  const release = h("input", { name: "release", type: "search", placeholder: "release",
    value: filters.release, "aria-label": "release", size: 12 });
  const environment = h("input", { name: "environment", type: "search",
    placeholder: "environment", value: filters.environment, "aria-label": "environment",
    size: 10 });
  const live = h("input", { name: "live", type: "checkbox", checked: filters.live });
  const updated = h("span", { class: "hint", "data-role": "updated" });
  const form = h("form", { class: "filters", onsubmit: (event) => {
    event.preventDefault();
    filters.level = level.value;
    filters.q = q.value.trim();
    filters.release = release.value.trim();
    filters.environment = environment.value.trim();
    pages.length = 1;
    load().catch(ctx.fail);
  } }, level, q, release, environment, h("button", { type: "submit" }, "Search"),
  h("label", { class: "live" }, live, "Live"), updated);
  live.addEventListener("change", () => { filters.live = live.checked; });
  const body = h("div");
  // A line's invocation opens here, above the lines, and stays open while they refresh.
  const panel = h("div", { "data-role": "invocation" });
  function open(id) {
    invocationPanel(id, ctx.signal, () => panel.replaceChildren())
      .then((node) => panel.replaceChildren(node)).catch(ctx.fail);
  }

  async function load() {
    const page = await get("/api/logs/recent", {
      hours: ctx.hours, script: ctx.script, level: filters.level, q: filters.q,
      release: filters.release, environment: filters.environment, limit: 50,
      cursor: pages[pages.length - 1],
    }, ctx.signal);
    body.replaceChildren(...render(page));
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  function render(page) {
    const rows = page.logs.map((line) => h("tr", { "data-level": line.level, "data-ts": line.ts },
      h("td", { class: "nowrap" }, when(line.ts)),
      h("td", {}, h("span", { class: `level ${line.level}` }, line.level)),
      h("td", {}, line.script, line.release || line.environment
        ? h("span", { class: "hint", "data-role": "release" },
          ` ${[line.release, line.environment].filter(Boolean).join(" · ")}`)
        : null),
      h("td", { class: "message" },
        line.exception_name ? h("strong", {}, `${line.exception_name}: `) : null,
        line.message),
      h("td", {}, line.outcome),
      h("td", { class: "nowrap" }, line.invocation
        ? h("button", { type: "button", class: "quiet", "data-action": "invocation",
          title: "this line's invocation, with all its lines", onclick: () => open(line.invocation) },
        requestLabel(line))
        : "–")));
    const pager = h("div", { class: "pager" },
      h("button", { type: "button", class: "quiet", "data-action": "newest",
        disabled: pages.length === 1,
        onclick: () => { pages.length = 1; load().catch(ctx.fail); } }, "Newest"),
      h("span", { "data-role": "page" }, `page ${pages.length}`),
      h("button", { type: "button", class: "quiet", "data-action": "older",
        disabled: !page.next_cursor,
        onclick: () => { pages.push(page.next_cursor); load().catch(ctx.fail); } }, "Older"));
    if (!rows.length) return [empty("No log lines match."), pager];
    return [table(["Time", "Level", "Script", "Message", "Outcome", "Request"], rows,
      { "data-table": "logs" }), pager];
  }

  // Live: only the newest page moves; an older page stays put while it is read.
  const timer = setInterval(() => {
    if (filters.live && pages.length === 1 && !document.hidden) load().catch(ctx.fail);
  }, LIVE_MS);
  ctx.signal.addEventListener("abort", () => clearInterval(timer));
  await load();
  out.append(form, panel, body);
  return [out];
}
