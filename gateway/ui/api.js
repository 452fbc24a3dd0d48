// Calls to the gateway's API, from the page's own origin, with the bearer token when one is set.

const TOKEN_KEY = 'flotilla.token';

/** An error answer of the API: its HTTP status, stable code and message. */
export class ApiError extends Error {
  constructor(status, code, message, queryId) {
    super(message);
    this.status = status;
    this.code = code;
    this.queryId = queryId;
  }
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra) {
  const all = new Headers(extra);
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) all.set('authorization', `Bearer ${token}`);
  return all;
}

/** Reads the API's error envelope; a 401 asks the page for a token. */
export async function apiError(response) {
  let code = `http_${response.status}`;
  let message = response.statusText;
  let queryId = response.headers.get('x-flotilla-query-id');
  try {
    const body = await response.json();
    code = body.error.code;
    message = body.error.message;
    queryId = body.error.query_id ?? queryId;
  } catch {
    // Not the envelope (a proxy's page): keep the status.
  }
  if (response.status === 401) window.dispatchEvent(new Event('flotilla:unauthorized'));
  return new ApiError(response.status, code, message, queryId);
}

/** Fetches `path`; any answer but 2xx is thrown as an ApiError. */
export async function request(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: headers(options.headers),
    cache: 'no-store',
    credentials: 'omit',
  });
  if (!response.ok) throw await apiError(response);
  return response;
}

export async function getJson(path) {
  return (await request(path)).json();
}

export async function getText(path) {
  return (await request(path)).text();
}

/** A fresh query id (UUID v4), so the page knows it before the first byte. */
export function newQueryId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Runs `sql` with the given id and result format; returns the response once it starts. */
export function runQuery(sql, queryId, accept, signal) {
  return request('/v1/query', {
    method: 'POST',
    body: sql,
    signal,
    headers: {
      'content-type': 'text/plain; charset=utf-8',
      accept,
      'x-flotilla-query-id': queryId,
    },
  });
}
