// Errors: the fingerprints of the window with their trend, sample and stack, and the buttons
// that resolve, ignore or reopen them (a write token is needed; a read token is told so).

import { ApiError, get, patch } from "./api.js";
import { sparkline } from "./charts.js";
import { count, empty, h, when } from "./dom.js";
import { invocationPanel } from "./invocation.js";

const ACTIONS = [["resolved", "Resolve"], ["ignored", "Ignore"], ["open", "Reopen"]];

const deploy = { release: "", environment: "" };

export async function errors(ctx) {
  const { hours, script, signal } = ctx;
  const release = h("input", { name: "release", type: "search", placeholder: "release",
    value: deploy.release, "aria-label": "release", size: 12 });
  const environment = h("input", { name: "environment", type: "search",
    placeholder: "environment", value: deploy.environment, "aria-label": "environment",
    size: 10 });
  const body = h("div");
  async function load() {
    const page = await get("/api/logs/errors", { hours, script, limit: 50,
      release: deploy.release, environment: deploy.environment }, signal);
    body.replaceChildren(page.errors.length
      ? h("div", { class: "errors" }, page.errors.map((e) => card(e, hours, ctx)))
      : empty("No errors in this range."));
  }
  const form = h("form", { class: "filters", onsubmit: (event) => {
    event.preventDefault();
    deploy.release = release.value.trim();
    deploy.environment = environment.value.trim();
    load().catch(ctx.fail);
  } }, release, environment, h("button", { type: "submit" }, "Filter"));
  await load();
  return [form, body];
}

function card(e, hours, ctx) {
  // Its latest occurrence's invocation (with its trace's waterfall) opens inside the card.
  const panel = h("div", { "data-role": "invocation" });
  const latest = e.latest_invocation ? h("button", {
    type: "button", class: "quiet", "data-action": "latest",
    onclick: () => invocationPanel(e.latest_invocation, ctx.signal, () => panel.replaceChildren())
      .then((node) => panel.replaceChildren(node)).catch(ctx.fail),
  }, "Latest occurrence") : null;
  const badge = h("span", { class: `badge ${e.status}`, "data-role": "status" }, e.status);
  const problem = h("p", { class: "error", role: "alert" });
  const buttons = ACTIONS.map(([status, label]) => h("button", {
    type: "button", class: "quiet", "data-action": status, disabled: e.status === status,
    onclick: () => change(status),
  }, label));
  const el = h("article", { class: "card error-group", "data-fingerprint": e.fingerprint },
    h("header", {},
      h("h3", {}, e.name), badge,
      h("span", { class: "occurrences", "data-value": e.occurrences },
        `${count(e.occurrences)} in range`)),
    h("p", { class: "template" }, e.template),
    h("div", { class: "meta" },
      sparkline(trend(e.trend, hours), `occurrences per hour of ${e.name}`),
      h("span", {}, `${count(e.occurrences_total)} since first seen ${when(e.first_seen)}`),
      h("span", {}, `last ${when(e.last_seen)}`),
      h("span", {}, e.scripts.join(", ")),
      e.regressions ? h("span", { class: "warn" }, `${e.regressions} regressions`) : null),
    h("details", {},
      h("summary", {}, "Sample and stack"),
      h("pre", { class: "sample" }, e.sample_message),
      e.sample_stack ? h("pre", { class: "stack" }, e.sample_stack) : null),
    h("div", { class: "actions" }, buttons, latest, problem),
    panel);

  async function change(status) {
    problem.textContent = "";
    try {
      const updated = await patch(`/api/errors/${e.fingerprint}`, { status });
      badge.textContent = updated.status;
      badge.className = `badge ${updated.status}`;
      for (const b of buttons) b.disabled = b.dataset.action === updated.status;
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      problem.textContent = error.status === 403
        ? "Changing a status needs a write token." : error.message;
    }
  }
  return el;
}

// Sparse hours to one value per hour of the range, so the sparkline's x axis is time.
function trend(points, hours) {
  const end = Math.floor(Date.now() / 3600e3);
  const values = new Array(Math.min(hours, 720)).fill(0);
  for (const p of points) {
    const i = values.length - 1 - (end - Math.floor(Date.parse(p.hour) / 3600e3));
    if (i >= 0) values[i] += p.occurrences;
  }
  return values;
}
