// Talking to the server: every call carries the token (when the server has one).
// The token comes from ?token= in the page's address (then it is kept in this tab only) or the prompt.

const KEY = "editgraph-token";
let token = new URLSearchParams(location.search).get("token") || sessionStorage.getItem(KEY) || "";
if (token) sessionStorage.setItem(KEY, token);

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code;
    this.issues = e.issues || [];
  }
}

export function setToken(value) {
  token = value;
  sessionStorage.setItem(KEY, value);
}

// A URL for <img src>, links and sockets, which cannot send headers.
export function withToken(url) {
  if (!token) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
}

async function call(method, url, body, contentType) {
  const headers = {};
  if (token) headers.authorization = "Bearer " + token;
  if (contentType) headers["content-type"] = contentType;
  const res = await fetch(url, { method, headers, body });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: { message: text } }; }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

export const get = (url) => call("GET", url);
export const post = (url, obj) => call("POST", url, JSON.stringify(obj ?? {}), "application/json");
export const postBytes = (url, blob) => call("POST", url, blob, blob.type || "application/octet-stream");

// The job's events, live. `onEvent` gets each one in order; resolves when the job has finished.
export function follow(jobId, onEvent, after = 0) {
  return new Promise((resolve, reject) => {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(withToken(`${scheme}//${location.host}/api/jobs/${jobId}/events?after=${after}`));
    let last = after, done = false;
    ws.onmessage = (m) => {
      const ev = JSON.parse(m.data);
      last = ev.n;
      onEvent(ev);
      if (ev.event === "finished") { done = true; resolve(ev); }
    };
    ws.onclose = () => {
      if (done) return;
      // A dropped socket (server restart, network): pick up where we were.
      setTimeout(() => follow(jobId, onEvent, last).then(resolve, reject), 1000);
    };
  });
}
