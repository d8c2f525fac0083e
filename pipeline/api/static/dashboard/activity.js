// API usage and cost, scan activity and critical alerts: small rollups, shown as they come.

import { get, post, remove } from "./api.js";
import { hours as everyHour, lineChart, perHour } from "./charts.js";
import { count, empty, h, section, stat, table, usd, when } from "./dom.js";

// A call's name: its model (LLM calls) or its endpoint (the others).
const callName = (m) => m.model ?? m.endpoint ?? "(no endpoint)";
const sameName = (a, b) => a.provider === b.provider && a.model === b.model &&
  a.endpoint === b.endpoint;

export async function usage({ hours, signal }) {
  const body = await get("/api/logs/api-usage", { hours }, signal);
  const t = body.total;
  const days = [...new Set(body.days.map((d) => d.day))];
  // Models without a price have no cost to draw; the table lists them.
  const series = body.by_model.filter((m) => m.cost_usd !== null).map((m) => ({
    name: `${m.provider} ${callName(m)}`,
    points: days.map((day) => {
      const row = body.days.find((d) => d.day === day && sameName(d, m));
      return [Date.parse(`${day}T00:00:00Z`), row ? row.cost_usd ?? 0 : 0];
    }),
  }));
  const rows = body.by_model.map((m) => h("tr", { "data-model": `${m.provider}/${callName(m)}`,
    "data-kind": m.model === null ? "endpoint" : "model" },
    h("td", {}, m.provider), h("td", {}, m.model ?? ""), h("td", {}, m.endpoint ?? ""),
    h("td", { class: "num", "data-value": m.calls }, count(m.calls)),
    h("td", { class: "num" }, count(m.failures)),
    h("td", { class: "num" }, count(m.rate_limited)),
    h("td", { class: "num" }, count(m.tokens_in)),
    h("td", { class: "num" }, count(m.tokens_out)),
    h("td", { class: "num", "data-value": m.cost_usd ?? "" },
      m.cost_usd === null ? (m.model === null ? "–" : "no price") : usd(m.cost_usd))));
  // Rate-limit readings are not calls: the newest day's reading per provider, apart.
  const newest = new Map();
  for (const r of body.rate_limits) newest.set(r.provider, r);
  const limits = [...newest.values()].map((r) => h("tr", { "data-provider": r.provider },
    h("td", {}, r.provider), h("td", { class: "nowrap" }, r.day),
    h("td", { class: "num", "data-value": r.remaining ?? "" }, count(r.remaining)),
    h("td", { class: "num" }, count(r.limit)),
    h("td", { class: "nowrap" }, r.reset ? when(r.reset) : "–"),
    h("td", { class: "num" }, count(r.limited))));
  return [
    h("p", { class: "hint" },
      "API usage is recorded per provider and model or endpoint, not per script."),
    h("div", { class: "stats" },
      stat("calls", "Calls", t.calls, count(t.calls)),
      stat("tokens", "Tokens", t.tokens_in + t.tokens_out, count(t.tokens_in + t.tokens_out)),
      stat("cost", "Cost", t.cost_usd, usd(t.cost_usd)),
      stat("unpriced", "Calls without a price", t.unpriced_calls, count(t.unpriced_calls))),
    section("Cost per day", lineChart(series, { format: usd, label: "cost per day", days: true })),
    section("Per provider and model or endpoint", table(
      ["Provider", "Model", "Endpoint", "Calls", "Failures", "Rate limited", "Tokens in",
        "Tokens out", "Cost"], rows, { "data-table": "usage" })),
    section("Rate limits", limits.length
      ? table(["Provider", "Day", "Remaining", "Limit", "Resets", "Readings at the limit"],
        limits, { "data-table": "rate-limits" })
      : empty("No rate-limit readings in this range.")),
  ];
}

export async function scans({ hours, script, signal }) {
  const body = await get("/api/logs/scan-activity", { hours, script }, signal);
  const t = body.total;
  const byHour = new Map();
  for (const x of body.hours) {
    const sum = byHour.get(x.hour) || { started: 0, completed: 0, failed: 0 };
    for (const k of Object.keys(sum)) sum[k] += x[k];
    byHour.set(x.hour, sum);
  }
  const slots = everyHour(body.window.since, body.window.until);
  const summed = [...byHour.entries()].map(([hour, sum]) => ({ hour, ...sum }));
  const rows = body.hours.map((x) => h("tr", {},
    h("td", { class: "nowrap" }, when(x.hour)), h("td", {}, x.script),
    h("td", { class: "num" }, count(x.started)), h("td", { class: "num" }, count(x.completed)),
    h("td", { class: "num" }, count(x.failed)), h("td", { class: "num" }, count(x.files))));
  return [
    h("div", { class: "stats" },
      stat("started", "Started", t.started, count(t.started)),
      stat("completed", "Completed", t.completed, count(t.completed)),
      stat("failed", "Failed", t.failed, count(t.failed)),
      stat("files", "Files", t.files, count(t.files)),
      stat("repositories", "Repositories", t.repositories.length,
        count(t.repositories.length))),
    section("Scans per hour", lineChart(["started", "completed", "failed"].map((k) => ({
      name: k, points: perHour(slots, summed, (x) => x[k], 0),
    })), { format: (v) => count(Math.round(v)), label: "scans per hour" })),
    section("Per hour and script", rows.length
      ? table(["Hour", "Script", "Started", "Completed", "Failed", "Files"], rows,
        { "data-table": "scans" })
      : empty("No scans in this range.")),
  ];
}

export async function alerts({ hours, script, signal }) {
  const [body, states] = await Promise.all([
    get("/api/logs/critical-alerts", { hours, script, limit: 200 }, signal),
    get("/api/alerts/states", { days: 30 }, signal),
  ]);
  const note = h("p", { class: "hint", "data-role": "alert-action", "aria-live": "polite" });
  const act = (promise, done) => promise.then(() => { note.textContent = done; })
    .catch((error) => { note.textContent = error.status === 403
      ? "This token may only read: acknowledging and silencing need a read-write token."
      : `Not done: ${error.message}`; });
  const rows = body.alerts.map((a) => h("tr", { "data-alert": a.id, "data-rule": a.rule },
    h("td", {}, h("span", { class: `badge ${a.severity}` }, a.severity)),
    h("td", {}, a.rule), h("td", {}, a.script ?? "–"), h("td", { class: "message" }, a.summary),
    h("td", { class: "num" }, count(a.occurrences)),
    h("td", { class: "nowrap" }, when(a.last_at)),
    h("td", {}, h("button", { type: "button", class: "quiet", "data-action": "ack",
      onclick: () => act(post(`/api/alerts/${a.id}/ack`, {}), `Acknowledged ${a.rule}.`) },
      "Acknowledge"))));
  const stateRows = states.states.map((s) => h("tr",
    { "data-state": `${s.rule}:${s.group_key}`, "data-status": s.status },
    h("td", {}, s.rule), h("td", {}, s.group_key),
    h("td", {}, h("span", { class: `badge ${s.status}` }, s.status)),
    h("td", { class: "nowrap" }, when(s.since)),
    h("td", {}, h("button", { type: "button", class: "quiet", "data-action": "silence",
      onclick: () => act(post("/api/alerts/silences", { rule: s.rule, group: s.group_key,
        until: new Date(Date.now() + 3600_000).toISOString(), comment: "from the dashboard" }),
      `Silenced ${s.rule} for ${s.group_key} for an hour.`) }, "Silence 1h"))));
  const changeRows = states.changes.map((c) => h("tr",
    { "data-change": `${c.rule}:${c.group_key}`, "data-after": c.after },
    h("td", { class: "nowrap" }, when(c.at)), h("td", {}, c.rule), h("td", {}, c.group_key),
    h("td", {}, `${c.before} → ${c.after}`),
    h("td", {}, c.notify ? (c.silenced ? `${c.notify} (silenced)` : c.notify) : "–")));
  const silences = states.silences.map((s) => h("tr", { "data-silence": s.id },
    h("td", {}, s.rule), h("td", {}, s.group_key ?? "every group"),
    h("td", { class: "nowrap" }, when(s.until)), h("td", {}, s.comment),
    h("td", {}, h("button", { type: "button", class: "quiet", "data-action": "unsilence",
      onclick: () => act(remove(`/api/alerts/silences/${s.id}`), "Silence ended.") },
      "End"))));
  return [
    h("div", { class: "stats" }, stat("alerts", "Alerts", body.alerts.length,
      count(body.alerts.length)),
      stat("firing", "Firing", states.states.filter((s) => s.status === "firing").length,
        count(states.states.filter((s) => s.status === "firing").length))),
    note,
    section("Conditions", stateRows.length
      ? table(["Rule", "Group", "State", "Since", ""], stateRows, { "data-table": "states" })
      : empty("No condition has a state yet.")),
    section("Changes in the last 30 days", changeRows.length
      ? table(["When", "Rule", "Group", "Change", "Notified"], changeRows,
        { "data-table": "changes" })
      : empty("No changes.")),
    silences.length ? section("Silences", table(["Rule", "Group", "Until", "Comment", ""],
      silences, { "data-table": "silences" })) : null,
    section("Alerts", rows.length
      ? table(["Severity", "Rule", "Script", "Summary", "Occurrences", "Last", ""], rows,
        { "data-table": "alerts" })
      : empty("No alerts in this range.")),
  ];
}
