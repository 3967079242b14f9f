// Server-sent events over fetch(): EventSource cannot send an Authorization header, and the key
// must not go into the URL. parseEvents is the text/event-stream format (WHATWG HTML, "server-sent
// events"); follow() reconnects with Last-Event-ID, so a dropped connection misses nothing.
import {check, headers, url} from "./api.js";

const FINAL = new Set(["succeeded", "failed", "cancelled"]);

// Feed it text as it arrives; it returns the complete events ({event, data, id}) and keeps the
// unfinished tail for the next call. Comments (": ping") and unknown fields are ignored.
export function eventParser() {
  let buffer = "", data = [], event = "", id = null, retry = null;
  return function parse(text) {
    buffer += text;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();                       // an unterminated last line waits for more
    const out = [];
    for (const line of lines) {
      if (line === "") {                        // a blank line dispatches the event
        if (data.length) out.push({event: event || "message", data: data.join("\n"), id, retry});
        data = []; event = ""; retry = null;
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") event = value;
      else if (field === "id" && !value.includes("\0")) id = value;
      else if (field === "retry" && /^\d+$/.test(value)) retry = Number(value);
    }
    return out;
  };
}

// Follow /v1/jobs/{id}/events until the job's final status or until `signal` aborts.
// onEvent(kind, data) for each event; onTrouble(error) when the stream fails and will be retried.
export async function follow(jobId, {onEvent, onTrouble = () => {}, signal}) {
  let lastId = null, delay = 2000;
  while (!signal.aborted) {
    try {
      const response = await fetch(url(`jobs/${encodeURIComponent(jobId)}/events`), {
        signal, cache: "no-store",
        headers: headers({Accept: "text/event-stream", ...(lastId ? {"Last-Event-ID": lastId} : {})}),
      });
      await check(response);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parse = eventParser();
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        for (const message of parse(value)) {
          if (message.id !== null) lastId = message.id;
          if (message.retry !== null) delay = message.retry;
          const data = message.data ? JSON.parse(message.data) : {};
          onEvent(message.event, data);
          if (message.event === "status" && FINAL.has(data.status)) return;
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error.status && error.status !== 429 && error.status < 500) throw error;   // 401, 404: no retry
      onTrouble(error);
      if (error.status === 429) await sleep(Math.max(delay, 10000), signal);
    }
    await sleep(delay, signal);                 // the server closed (its max duration): resume
  }
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, {once: true});
  });
}
