// Shared parts of the browser test (keyframe_strip.mjs): Chromium with a clean console record, ComfyUI loaded in one
// of the three configurations, and page helpers that work on the classic canvas and in Nodes 2.0 (Vue nodes), for
// nodes of the workflow and of subgraphs alike. Nodes are named by execution id: "13", or "25:12" for node 12 inside
// subgraph node 25.
import { createRequire } from "node:module";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export const env = (name) => {
  if (!process.env[name]) throw new Error(`${name} is not set`);
  return process.env[name];
};

const started = Date.now();
export const log = (...args) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s]`, ...args);
export function check(condition, message, detail) {
  if (!condition) throw new Error(`${message}${detail === undefined ? "" : `: ${JSON.stringify(detail)}`}`);
}

// Console errors a clean ComfyUI 0.3.75 shows with each frontend, without the pack doing anything: 404s of files and
// APIs this server does not have (1.58's frontend asks for the newer /api/jobs), connections to the internet that the
// page's Content Security Policy blocks (api.comfy.org, also when the frontend looks the pack up in the registry, and
// the default workflow's model links), and two frontend glitches of loading a workflow into a new tab. Anything else
// fails the test, and so does any error about the pack's own files, thumbnails (/view) or uploads, known or not.
const KNOWN_404 = /\/(user\.css|favicon\.ico|api\/userdata\/user\.css|api\/userdata\?dir=(workflows|subgraphs)|api\/userdata\/comfy\.templates\.json|api\/jobs\?|templates\/[^/]+\.mp3)/;
const KNOWN_ERRORS = [
  /api\.comfy\.org/,
  /violates the following Content Security Policy directive|Refused to connect because it violates the document's Content Security Policy/,
  /\[Jobs API\] Error fetching jobs: JobsApiError: Failed to fetch jobs: 404|Failed to fetch queue: JobsApiError: Failed to fetch jobs: 404/,
  /Cannot read properties of undefined \(reading 'id'\)/,
  /Attempted to cleanup event listeners for graph that was never set up/,
  /ERR_NAME_NOT_RESOLVED|ERR_INTERNET_DISCONNECTED/,
];
const PACK_URLS = /\/extensions\/mmpl|\/view\?|\/upload\/|\/mmpl\//;

/** The console errors that are not known ComfyUI ones (see above). */
export function unexpectedErrors(errors) {
  return errors.filter((e) => {
    if (PACK_URLS.test(e.url)) return true; // also an exception thrown by the pack's code (its stack names the file)
    if (/Failed to load resource: the server responded with a status of 404/.test(e.text)) return !KNOWN_404.test(e.url);
    return !KNOWN_ERRORS.some((known) => known.test(e.text));
  });
}

/** Chromium (Debian's), a page with its console errors recorded, and a screenshot helper. */
export async function launch(artifacts) {
  const { chromium } = createRequire(path.join(env("BROWSER_DIR"), "package.json"))("playwright-core");
  const userDir = fs.mkdtempSync(path.join(os.tmpdir(), "mmpl-chromium-"));
  const context = await chromium.launchPersistentContext(userDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1400, height: 850 },
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync"],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(30_000);
  const errors = [];
  page.on("console", (message) => {
    if (message.type() === "error") errors.push({ text: message.text(), url: message.location()?.url ?? "" });
  });
  page.on("pageerror", (error) => errors.push({ text: `${error.name}: ${error.message}`, url: error.stack ?? "" }));
  await page.addInitScript(() => {
    localStorage.setItem("vueNodesBannerDismissed", "true");
    // The node an execution id names (the test's own resolver, independent of the pack's).
    window.__node = (id) => {
      let graph = window.app.rootGraph ?? window.app.graph, node = null;
      for (const part of String(id).split(":")) {
        if (node) graph = node.subgraph;
        node = graph?.getNodeById(Number(part)) ?? null;
      }
      return node;
    };
  });
  const shot = async (name, clip) => {
    await page.waitForTimeout(300); // let the canvas draw and DOM widgets settle
    await page.screenshot({ path: path.join(artifacts, `${name}.png`), clip });
    log("screenshot", name);
  };
  const close = async () => {
    await context.close();
    fs.rmSync(userDir, { recursive: true, force: true });
  };
  return { page, errors, shot, close };
}

/** Open ComfyUI (Nodes 2.0 on or off) and wait for the pack's extension; returns the frontend's version. */
export async function openComfy(page, url, vue) {
  const set = await page.request.post(`${url}/api/settings/Comfy.VueNodes.Enabled`, { data: vue });
  check(set.ok(), "setting Comfy.VueNodes.Enabled", set.status());
  await page.goto(url);
  await page.waitForFunction(() => window.app?.graph && window.app.extensions?.some((e) => e.name === "mmpl.keyframes"),
                             null, { timeout: 90_000 });
  await page.evaluate(async () => {
    await window.app.extensionManager.setting.set("Comfy.Minimap.Visible", false);
    const { api } = await import("/scripts/api.js");
    window.__mmpl = { events: [], successes: 0, errors: [] };
    api.addEventListener("mmpl.segment", ({ detail }) => window.__mmpl.events.push(detail));
    api.addEventListener("execution_success", () => window.__mmpl.successes++);
    api.addEventListener("execution_error", ({ detail }) => window.__mmpl.errors.push(detail.exception_message));
  });
  const state = await page.evaluate(() => ({ version: window.__COMFYUI_FRONTEND_VERSION__,
    vue: !!window.app.extensionManager.setting.get("Comfy.VueNodes.Enabled") }));
  check(state.vue === vue, "Nodes 2.0 setting", state);
  return state.version;
}

/** Show nodes `ids` of the graph on screen (the workflow's or the open subgraph's; title bars included) with their
 *  top left corner at (120, 180), below the top bar and the Run button, as large as fits (at most 1:1); returns
 *  their box on the screen. In Nodes 2.0 the nodes' own elements give the box (they may be taller than node.size). */
export async function view(page, ids) {
  const place = (boxes) => page.evaluate(([ids, boxes]) => {
    const canvas = window.app.canvas, graph = canvas.graph ?? window.app.graph;
    const title = window.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
    const rects = boxes ?? ids.map((id) => {
      const node = graph.getNodeById(id);
      return [node.pos[0], node.pos[1] - title, node.size[0], node.size[1] + title];
    });
    const x0 = Math.min(...rects.map((r) => r[0])) - 10, x1 = Math.max(...rects.map((r) => r[0] + r[2])) + 10;
    const y0 = Math.min(...rects.map((r) => r[1])) - 22, y1 = Math.max(...rects.map((r) => r[1] + r[3])) + 10;
    const [left, top, right, bottom] = [120, 180, window.innerWidth - 20, window.innerHeight - 20];
    const scale = Math.min(1, (right - left) / (x1 - x0), (bottom - top) / (y1 - y0));
    canvas.ds.scale = scale;
    canvas.ds.offset = [left / scale - x0, top / scale - y0];
    canvas.setDirty(true, true);
    return { x: left, y: top, width: Math.ceil((x1 - x0) * scale), height: Math.ceil((y1 - y0) * scale) };
  }, [ids, boxes]);
  let clip = await place(null);
  await page.waitForTimeout(150);
  const boxes = await page.evaluate((ids) => {
    const canvas = window.app.canvas, { scale, offset } = canvas.ds;
    const origin = canvas.canvas.getBoundingClientRect();
    const els = ids.map((id) => document.querySelector(`[data-node-id="${id}"]`));
    if (els.some((e) => !e)) return null; // the classic canvas
    return els.map((e) => {
      const r = e.getBoundingClientRect();
      return [(r.left - origin.left) / scale - offset[0], (r.top - origin.top) / scale - offset[1], r.width / scale, r.height / scale];
    });
  }, ids);
  if (boxes) {
    clip = await place(boxes);
    await page.waitForTimeout(150);
  }
  return clip;
}

/** What node `id`'s keyframe strip shows. */
export function readStrip(page, id) {
  return page.evaluate((id) => {
    const s = window.__node(id).mmplStrip;
    const rows = [...s.element.querySelectorAll(".mmpl-row")].map((row) => ({
      segment: Number(row.dataset.segment),
      changed: row.dataset.changed === "true",
      chips: [...row.querySelectorAll(".mmpl-row-head .mmpl-chip")].map((c) => c.textContent),
      status: row.querySelector(".mmpl-status").dataset.status,
      files: [...row.querySelectorAll(".mmpl-kf")].map((f) => f.dataset.file),
      captions: [...row.querySelectorAll(".mmpl-kf figcaption")].map((c) => c.textContent),
      loaded: [...row.querySelectorAll(".mmpl-kf img")].every((img) => img.complete && img.naturalWidth > 0),
    }));
    return { plan: s.planId, rows, roles: [...s.element.querySelectorAll(".mmpl-role")].map((r) => r.textContent),
             head: s.element.querySelector(".mmpl-strip-head")?.textContent ?? "",
             message: s.element.querySelector(".mmpl-message")?.textContent ?? "" };
  }, id);
}

/** The strip of node `id` (its local id in the graph on screen) as a locator. */
export const stripOf = (page, id) => page.locator(`[data-mmpl-strip][data-node="${id}"]`).filter({ visible: true });

/** Wait until the strips of `ids` (on screen) show images that loaded. */
export function stripsLoaded(page, ids) {
  return page.waitForFunction((ids) => ids.every((id) => {
    const imgs = [...(window.__node(id)?.mmplStrip?.element.querySelectorAll(".mmpl-kf img") ?? [])];
    return imgs.length && imgs.every((img) => img.complete && img.naturalWidth > 0);
  }), ids);
}

/** Click Run, wait for the `successes`-th successful run and for the strips of `ids` to show their images. */
export async function runAndWait(page, successes, ids) {
  const t0 = Date.now();
  await page.locator('button[data-testid="queue-button"], [data-testid="queue-button"] button').first().click();
  await page.waitForFunction((n) => window.__mmpl.successes >= n || window.__mmpl.errors.length, successes,
                             { timeout: 480_000 });
  const failed = await page.evaluate(() => window.__mmpl.errors);
  check(!failed.length, "the workflow failed", failed);
  await stripsLoaded(page, ids);
  return Date.now() - t0;
}

/** The Keyframe Editor's edits (node `id`), as its widget holds them. */
export const widgetEdits = (page, id) => page.evaluate((id) =>
  JSON.parse(window.__node(id).widgets.find((w) => w.name === "edits").value).edits, id);
