// Drives Debian's Chromium with playwright-core for the Python tests (tests/browser).
//
// Usage: node driver.mjs <chromium executable>
//
// One JSON command per line on stdin, one JSON answer per line on stdout:
//   {"id": 1, "op": "open", "page": "p1"}                  a fresh browser context + page
//   {"id": 2, "op": "goto", "page": "p1", "url": "..."}
//   {"id": 3, "op": "eval", "page": "p1", "expr": "..."}    value of an expression (awaited)
//   {"id": 4, "op": "waitFor", "page": "p1", "expr": "...", "timeoutMs": 5000}
//   {"id": 5, "op": "fill" | "click", "page": "p1", "selector": "...", "value": "..."}
//   {"id": 6, "op": "screenshot", "page": "p1", "path": "...", "fullPage": true}
//   {"id": 7, "op": "network", "page": "p1"}                every request the page made
//   {"id": 8, "op": "console", "page": "p1"}                console messages, page errors
//   {"id": 9, "op": "close", "page": "p1"}
// Answers: {"id": n, "ok": true, "value": ...} or {"id": n, "ok": false, "error": "..."}.
// The browser is launched once; stdin closing (or "quit") shuts it down.

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const executablePath = process.argv[2] || "/usr/bin/chromium";

// Debian's Chromium, headless, as root in a closed network: no sandbox, no GPU, no QUIC
// and no background calls home. Playwright gives it a fresh, empty --user-data-dir.
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

const pages = new Map();

function record(name, page) {
  const state = { page, network: [], console: [], seq: 0 };
  const byRequest = new Map();
  page.on("request", (request) => {
    const entry = {
      seq: state.seq++,
      at: Date.now(),
      url: request.url(),
      method: request.method(),
      type: request.resourceType(),
      headers: request.headers(),
      headersComplete: false,
      status: null,
      responseHeaders: null,
      failure: null,
    };
    byRequest.set(request, entry);
    state.network.push(entry);
    // The complete set, as sent on the wire (Last-Event-ID, cookies ...), arrives later.
    request.allHeaders().then(
      (h) => {
        entry.headers = h;
        entry.headersComplete = true;
      },
      () => {},
    );
  });
  page.on("response", (response) => {
    const entry = byRequest.get(response.request());
    if (!entry) return;
    entry.status = response.status();
    response.allHeaders().then((h) => { entry.responseHeaders = h; }, () => {});
  });
  page.on("requestfailed", (request) => {
    const entry = byRequest.get(request);
    if (entry) entry.failure = request.failure()?.errorText ?? "failed";
  });
  page.on("console", (msg) => state.console.push({ type: msg.type(), text: msg.text() }));
  page.on("pageerror", (err) => state.console.push({ type: "pageerror", text: String(err) }));
  pages.set(name, state);
  return state;
}

function get(name) {
  const state = pages.get(name);
  if (!state) throw new Error(`no page named ${name}`);
  return state;
}

const ops = {
  async open({ page: name, viewport }) {
    if (pages.has(name)) throw new Error(`page ${name} is already open`);
    const context = await browser.newContext({
      viewport: viewport ?? { width: 1280, height: 900 },
    });
    record(name, await context.newPage());
    return true;
  },
  async goto({ page, url, timeoutMs }) {
    const response = await get(page).page.goto(url, { timeout: timeoutMs ?? 10000 });
    return response ? response.status() : null;
  },
  async eval({ page, expr }) {
    return await get(page).page.evaluate(expr);
  },
  // Polled from here rather than with waitForFunction, which compiles the expression in
  // the page: a page with a strict Content-Security-Policy (the status page) forbids that.
  async waitFor({ page, expr, timeoutMs, pollingMs }) {
    const target = get(page).page;
    const deadline = Date.now() + (timeoutMs ?? 5000);
    let last;
    for (;;) {
      try {
        const value = await target.evaluate(expr);
        if (value) return value;
        last = value;
      } catch (err) {
        // A navigation in progress destroys the context: try again until the deadline.
        last = String(err && err.message ? err.message : err);
      }
      if (Date.now() > deadline) {
        throw new Error(`waitFor timed out after ${timeoutMs ?? 5000} ms; last: ${last}`);
      }
      await new Promise((resolve) => setTimeout(resolve, pollingMs ?? 20));
    }
  },
  async fill({ page, selector, value }) {
    await get(page).page.fill(selector, value, { timeout: 5000 });
    return true;
  },
  async click({ page, selector }) {
    await get(page).page.click(selector, { timeout: 5000 });
    return true;
  },
  async screenshot({ page, path, fullPage }) {
    await get(page).page.screenshot({ path, fullPage: fullPage ?? true });
    return path;
  },
  async network({ page }) {
    return get(page).network;
  },
  async console({ page }) {
    return get(page).console;
  },
  async close({ page }) {
    const state = pages.get(page);
    if (!state) return false;
    pages.delete(page);
    await state.page.context().close();
    return true;
  },
};

function answer(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

let quitting = false;

async function quit() {
  if (quitting) return;
  quitting = true;
  await browser.close().catch(() => {});
  process.exit(0);
}

const input = createInterface({ input: process.stdin });
input.on("line", async (line) => {
  if (!line.trim()) return;
  let command;
  try {
    command = JSON.parse(line);
  } catch (err) {
    answer({ id: null, ok: false, error: `bad command: ${err}` });
    return;
  }
  if (command.op === "quit") {
    answer({ id: command.id, ok: true, value: true });
    await quit();
    return;
  }
  const op = ops[command.op];
  if (!op) {
    answer({ id: command.id, ok: false, error: `unknown op ${command.op}` });
    return;
  }
  try {
    answer({ id: command.id, ok: true, value: (await op(command)) ?? null });
  } catch (err) {
    answer({ id: command.id, ok: false, error: String(err && err.message ? err.message : err) });
  }
});
input.on("close", quit);

answer({ id: 0, ok: true, value: { browser: browser.version() } });
