// The v1 API from the browser: the user's key (kept in sessionStorage, so it ends with the tab) on every call,
// and the API's JSON error body turned into an ApiError that says status, code and message.

const KEY_NAME = "trove.apiKey";

export function storedKey() {
  return sessionStorage.getItem(KEY_NAME) ?? "";
}

export function storeKey(key) {
  if (key) sessionStorage.setItem(KEY_NAME, key);
  else sessionStorage.removeItem(KEY_NAME);
}

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details ?? {};
  }

  toString() {
    return this.status ? `${this.status} ${this.code}: ${this.message}` : `${this.code}: ${this.message}`;
  }
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = storedKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "network_error", `Trove did not answer (${err.message})`);
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data?.error ?? { code: "http_error", message: text || response.statusText };
    throw new ApiError(response.status, error.code, error.message, error.details);
  }
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body ?? {});
export const put = (path, body) => api("PUT", path, body);
export const del = (path) => api("DELETE", path);

export const collectionPath = (name) => `/v1/collections/${encodeURIComponent(name)}`;

// What the key may do, asked of the API itself: an empty create-collection body fails the schema (422, nothing
// written) for a key that may write, and is refused with 403 for a read-only key, since the key is checked first.
export async function keyRights() {
  await get("/v1/collections"); // 401 for a missing or unknown key
  try {
    await post("/v1/collections", {});
  } catch (err) {
    if (err.status === 403) return "read";
    if (err.status === 422 || err.status === 400) return "write";
    throw err;
  }
  return "write";
}
