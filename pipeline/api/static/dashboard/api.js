// The query API, with the token of this tab. Every failure becomes an ApiError whose message
// is the API's own `error` text, so a view can show it as it is.

const KEY = "tailpipe.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const session = {
  token: () => sessionStorage.getItem(KEY),
  signIn: (token) => sessionStorage.setItem(KEY, token),
  signOut: () => sessionStorage.removeItem(KEY),
};

async function call(method, path, { params = {}, body, signal } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
  }
  const headers = { Authorization: `Bearer ${session.token() || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "the API cannot be reached");
  }
  if (response.status === 204) return null;
  if (response.ok) return response.json();
  let message = `HTTP ${response.status}`;
  try {
    message = (await response.json()).error || message;
  } catch {
    // not JSON: keep the status line
  }
  throw new ApiError(response.status, message);
}

export const get = (path, params, signal) => call("GET", path, { params, signal });
export const patch = (path, body) => call("PATCH", path, { body });
export const post = (path, body) => call("POST", path, { body });
export const remove = (path) => call("DELETE", path);
