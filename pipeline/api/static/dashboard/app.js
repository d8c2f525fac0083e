// The dashboard's shell: sign-in, the views, the range and script pickers. Each view is an
// async function of {hours, script, signal} returning the nodes to show; switching views or
// pickers aborts the previous one (its requests and its timers).

import { ApiError, get, session } from "./api.js";
import { alerts, scans, usage } from "./activity.js";
import { errors } from "./errors.js";
import { logs } from "./logs.js";
import { overview } from "./overview.js";

const VIEWS = { overview, errors, logs, usage, scans, alerts };
const $ = (id) => document.getElementById(id);
let current = null;

function showSignIn(message = "") {
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  session.signIn($("token").value.trim());
  try {
    await get("/api/logs/scripts", { hours: 1, limit: 1 });
  } catch (error) {
    session.signOut();
    const why = error instanceof ApiError && error.status === 401
      ? "That token was refused." : `Cannot sign in: ${error.message}`;
    showSignIn(why);
    return;
  }
  $("token").value = "";
  start();
}

function start() {
  $("signin").hidden = true;
  $("app").hidden = false;
  loadScripts();
  route();
}

async function loadScripts() {
  const select = $("script");
  const chosen = select.value;
  try {
    const body = await get("/api/logs/scripts", { hours: $("range").value, limit: 200 });
    const names = body.scripts.map((s) => s.script);
    if (chosen && !names.includes(chosen)) names.unshift(chosen);
    select.replaceChildren(new Option("All scripts", ""),
      ...names.map((name) => new Option(name, name, false, name === chosen)));
  } catch (error) {
    fail(error);
  }
}

function viewName() {
  const name = location.hash.slice(1);
  return name in VIEWS ? name : "overview";
}

async function route() {
  current?.abort();
  current = new AbortController();
  const { signal } = current;
  const name = viewName();
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.getAttribute("href") === `#${name}`);
    if (a.getAttribute("href") === `#${name}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  $("script").disabled = name === "usage";
  $("problem").hidden = true;
  const view = $("view");
  view.dataset.view = name;
  view.dataset.state = "loading";
  const ctx = {
    hours: Number($("range").value), script: name === "usage" ? "" : $("script").value,
    signal, fail,
  };
  try {
    const nodes = await VIEWS[name](ctx);
    if (signal.aborted) return;
    view.replaceChildren(...nodes);
    view.dataset.state = "ready";
  } catch (error) {
    if (!signal.aborted) fail(error);
  }
}

function fail(error) {
  if (error.name === "AbortError") return;
  if (error instanceof ApiError && error.status === 401) {
    session.signOut();
    showSignIn("Your token was refused; sign in again.");
    return;
  }
  const problem = $("problem");
  problem.textContent = error instanceof ApiError ? error.message : `Unexpected: ${error}`;
  problem.hidden = false;
  $("view").dataset.state = "failed";
  if (!(error instanceof ApiError)) console.error(error);
}

$("signin-form").addEventListener("submit", signIn);
$("signout").addEventListener("click", () => {
  current?.abort();
  session.signOut();
  $("view").replaceChildren();
  showSignIn();
});
$("range").addEventListener("change", () => { loadScripts(); route(); });
$("script").addEventListener("change", route);
window.addEventListener("hashchange", route);
if (session.token()) start(); else showSignIn();
