// Talking to this server: the key from localStorage as a Bearer token, errors as messages.
// Paths are relative to the page ("v1/jobs"): the page calls the base URL it was loaded from,
// a reverse proxy's path prefix included (loaded at /vision/, it calls /vision/v1/jobs).

const KEY_NAME = "batchvision.apiKey";

export function apiKey() {
  return localStorage.getItem(KEY_NAME) || "";
}

export function saveKey(key) {
  if (key) {
    localStorage.setItem(KEY_NAME, key);
  } else {
    localStorage.removeItem(KEY_NAME);
  }
}

export function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(`${code}: ${message}`);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter; // seconds, from a 429's or a 503's Retry-After
  }
}

// batchvision's native errors are {"error": {"code", "message"}}; anything else gets its status.
async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: fall through to the status line
  }
  const error = body && body.error;
  const retryAfter = Number(response.headers.get("retry-after")) || null;
  if (error && error.code) {
    const hint = response.status === 401 ? " (paste an API key at the top of the page)" : "";
    return new ApiError(response.status, error.code, error.message + hint, retryAfter);
  }
  return new ApiError(response.status, `http_${response.status}`, response.statusText);
}

// The server's base URL as this page sees it, with its trailing slash.
export function serverBase() {
  return new URL(".", document.baseURI).href;
}

export async function request(path, options = {}) {
  const headers = { ...authHeaders(), ...(options.headers || {}) };
  const response = await fetch(new URL(path, serverBase()), { ...options, headers });
  if (!response.ok) {
    throw await failure(response);
  }
  return response;
}

export async function getJson(path, options = {}) {
  const response = await request(path, options);
  return response.json();
}
