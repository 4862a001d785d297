// Drives the real ComfyUI of the test suite in Debian's Chromium (playwright-core from .browser/, set up by
// scripts/setup_browser.sh): load the plan-edit-populate example, run it, check the keyframe strips, replace a
// keyframe through the Keyframe Editor's UI, run again and compare. Run by tests/browser/test_browser_keyframes.py,
// which passes everything through environment variables and checks result.json; a screenshot of each step goes to
// $ARTIFACTS. Exits non-zero on the first failed check.
import { createRequire } from "node:module";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const env = (name) => {
  if (!process.env[name]) throw new Error(`${name} is not set`);
  return process.env[name];
};
const URL = env("COMFY_URL");
const ARTIFACTS = env("ARTIFACTS");
const WORKFLOW = JSON.parse(fs.readFileSync(env("WORKFLOW"), "utf8"));
const REPLACEMENT = env("REPLACEMENT"); // the image file the user uploads
const EXPECT = JSON.parse(env("EXPECT")); // {segments, captions: [[...per segment]], roles, edit: {node, segment, frame}}
const { chromium } = createRequire(path.join(env("BROWSER_DIR"), "package.json"))("playwright-core");

// ComfyUI 0.3.75's own console errors on a clean server; any other error fails the test, and so does any error
// about the pack's files, thumbnails (/view) or uploads, known or not.
const PACK_URLS = /\/extensions\/mmpl|\/view\?|\/upload\//;
const KNOWN_ERRORS = [
  /Failed to load resource: the server responded with a status of 404/,
  /api\.comfy\.org/,
  /Cannot read properties of undefined \(reading 'id'\)/,
  /Attempted to cleanup event listeners for graph that was never set up/, // loadGraphData opening a new tab
  /ERR_NAME_NOT_RESOLVED|ERR_INTERNET_DISCONNECTED/,
];
const PREVIEW = 13, CHAIN = 12, EDITOR = 11, POPULATOR = 20, STRIPS = [6, 10, 11, 12, 13];

const started = Date.now();
const timings = {};
const log = (...args) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s]`, ...args);
function check(condition, message, detail) {
  if (!condition) throw new Error(`${message}${detail === undefined ? "" : `: ${JSON.stringify(detail)}`}`);
}

const userDir = fs.mkdtempSync(path.join(os.tmpdir(), "mmpl-chromium-"));
const context = await chromium.launchPersistentContext(userDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1400, height: 850 },
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const errors = [];
let page;
try {
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(30_000);
  page.on("console", (message) => {
    if (message.type() === "error") errors.push({ text: message.text(), url: message.location()?.url ?? "" });
  });
  page.on("pageerror", (error) => errors.push({ text: `${error.name}: ${error.message}`, url: error.stack ?? "" }));
  await page.addInitScript(() => localStorage.setItem("vueNodesBannerDismissed", "true"));
  const shot = async (name, clip) => {
    await page.waitForTimeout(300); // let the canvas draw and DOM widgets settle
    await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), clip });
    log("screenshot", name);
  };

  // 1. Load ComfyUI and the example workflow.
  await page.goto(URL);
  await page.waitForFunction(() => window.app?.graph && window.app.extensions?.some((e) => e.name === "mmpl.keyframes"),
                             null, { timeout: 60_000 });
  await page.evaluate(async (workflow) => {
    await window.app.extensionManager.setting.set("Comfy.Minimap.Visible", false);
    await window.app.loadGraphData(workflow);
    const { api } = await import("/scripts/api.js");
    window.__mmpl = { events: [], successes: 0, errors: [] };
    api.addEventListener("mmpl.segment", ({ detail }) => window.__mmpl.events.push(detail));
    api.addEventListener("execution_success", () => window.__mmpl.successes++);
    api.addEventListener("execution_error", ({ detail }) => window.__mmpl.errors.push(detail.exception_message));
  }, WORKFLOW);
  timings.load = Date.now() - started;

  // Show nodes `ids` (title bars included) with their top left corner at screen (120, 180), below the top bar and
  // the Run button, as large as fits (at most 1:1); returns their box on the screen.
  const nodeStrip = (id) => page.locator(`[data-mmpl-strip][data-node="${id}"]`);
  const view = (ids) => page.evaluate((ids) => {
    const canvas = window.app.canvas, nodes = ids.map((id) => window.app.graph.getNodeById(id));
    const x0 = Math.min(...nodes.map((n) => n.pos[0])) - 10, x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])) + 10;
    const y0 = Math.min(...nodes.map((n) => n.pos[1])) - 52, y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1])) + 10;
    const [left, top, right, bottom] = [120, 180, window.innerWidth - 20, window.innerHeight - 20];
    const scale = Math.min(1, (right - left) / (x1 - x0), (bottom - top) / (y1 - y0));
    canvas.ds.scale = scale;
    canvas.ds.offset = [left / scale - x0, top / scale - y0];
    canvas.setDirty(true, true);
    return { x: left, y: top, width: Math.ceil((x1 - x0) * scale), height: Math.ceil((y1 - y0) * scale) };
  }, ids);
  const strip = (id) => page.evaluate((id) => {
    const s = window.app.graph.getNodeById(id).mmplStrip;
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
             head: s.element.querySelector(".mmpl-strip-head")?.textContent ?? "" };
  }, id);
  const runAndWait = async (successes) => {
    const t0 = Date.now();
    await page.locator('[data-testid="queue-button"] button').first().click();
    await page.waitForFunction((n) => window.__mmpl.successes >= n || window.__mmpl.errors.length, successes,
                               { timeout: 480_000 });
    const failed = await page.evaluate(() => window.__mmpl.errors);
    check(!failed.length, "the workflow failed", failed);
    // Every strip shows its (new) plan once the images are in.
    await page.waitForFunction((ids) => ids.every((id) => {
      const imgs = [...window.app.graph.getNodeById(id).mmplStrip.element.querySelectorAll(".mmpl-kf img")];
      return imgs.length && imgs.every((img) => img.complete && img.naturalWidth > 0);
    }), STRIPS);
    return Date.now() - t0;
  };

  await view([6, 10, 11, 12]);
  await shot("01_loaded");

  // 2. Run: every planner / preview / editor shows its strip, labelled.
  timings.run1 = await runAndWait(1);
  log("run 1 done");
  const first = {};
  for (const id of STRIPS) {
    first[id] = await strip(id);
    const rows = first[id].rows;
    check(rows.length === EXPECT.segments, `node ${id}: one row per segment`, rows.length);
    check(rows.every((r) => r.loaded), `node ${id}: every thumbnail loads`);
    check(JSON.stringify(rows.map((r) => r.captions)) === JSON.stringify(EXPECT.captions), `node ${id}: labels`,
          rows.map((r) => r.captions));
    check(JSON.stringify(first[id].roles) === JSON.stringify(EXPECT.roles), `node ${id}: keyframe roles`, first[id].roles);
  }
  check(first[PREVIEW].rows.every((r) => r.status === "done"), "populating marked every segment done", first[PREVIEW].rows);
  const events = await page.evaluate(() => window.__mmpl.events.splice(0));
  for (let k = 0; k < EXPECT.segments; k++) {
    const seen = events.filter((e) => e.segment === k).map((e) => e.status);
    check(JSON.stringify(seen) === '["planned","populating","done"]', `segment ${k}: populate progress`, seen);
  }
  const chips = await page.locator(`[data-mmpl-progress] .mmpl-chip[data-status="done"]`).count();
  check(chips === EXPECT.segments, "the populator shows every segment done", chips);
  await view([CHAIN, PREVIEW, POPULATOR]);
  await shot("02_run1_strips");

  // 3. A click on a keyframe shows it large.
  await view([10]);
  await nodeStrip(10).locator(`.mmpl-kf[data-segment="0"][data-frame="6"]`).click();
  await page.locator(".mmpl-lightbox img").waitFor();
  const large = await page.evaluate(() => {
    const img = document.querySelector(".mmpl-lightbox img");
    return { width: img.getBoundingClientRect().width, caption: document.querySelector(".mmpl-lightbox figcaption").textContent };
  });
  check(large.width >= 300 && large.caption === "Segment 1 · latent f6 (mid) · 1.5s", "large view", large);
  await shot("03_large_keyframe");
  await page.keyboard.press("Escape");
  check((await page.locator(".mmpl-lightbox").count()) === 0, "Escape closes the large view");

  // 4. Replace a keyframe through the editor: hover it, "upload", choose the file.
  const { segment, frame } = EXPECT.edit;
  await view([EDITOR]);
  const editor = nodeStrip(EDITOR);
  const target = editor.locator(`.mmpl-kf[data-segment="${segment}"][data-frame="${frame}"]`);
  await target.hover();
  const chooser = page.waitForEvent("filechooser");
  await target.locator('button[data-action="upload"]').click();
  await (await chooser).setFiles(REPLACEMENT);
  await page.waitForFunction(([k, f]) => {
    const edits = JSON.parse(window.app.graph.getNodeById(11).widgets.find((w) => w.name === "edits").value).edits;
    return edits.some((e) => e.op === "replace" && e.segment === k && e.frame === f);
  }, [segment, frame]);
  await editor.locator(`.mmpl-kf.mmpl-replaced[data-segment="${segment}"][data-frame="${frame}"] img`).waitFor();
  await page.mouse.move(5, 400);
  const edited = await page.evaluate(() => {
    const node = window.app.graph.getNodeById(11);
    const saved = window.app.graph.serialize().nodes.find((n) => n.id === 11);
    return { value: node.widgets.find((w) => w.name === "edits").value, saved: saved.widgets_values };
  });
  const edits = JSON.parse(edited.value).edits;
  check(JSON.stringify(edited.saved) === JSON.stringify([edited.value]), "the edits are saved with the workflow", edited.saved);
  const replace = edits.find((e) => e.op === "replace");
  check(replace && replace.image.startsWith("mmpl/") && replace.image.endsWith(".png"), "the upload is referenced", edits);
  check(edits.some((e) => e.op === "lock" && e.segment === 0), "the example's lock of segment 0 stays", edits);
  check(!edits.some((e) => e.segment === segment && e.op === "reroll"), "a replace supersedes the segment's re-roll", edits);
  await shot("04_editor_replaced");

  // The other controls, on the last segment: re-roll, a new prompt, a keyframe picked from another strip (which
  // supersedes both), then reset, which leaves the edits as they were.
  const last = EXPECT.segments - 1;
  const widgetEdits = () => page.evaluate(() =>
    JSON.parse(window.app.graph.getNodeById(11).widgets.find((w) => w.name === "edits").value).edits);
  const lastEdits = async () => (await widgetEdits()).filter((e) => e.segment === last).map((e) => e.op).join(",");
  const row = editor.locator(`.mmpl-row[data-segment="${last}"]`);
  await row.locator('button[data-action="reroll"]').click();
  await row.locator('button[data-action="prompt"]').click();
  await row.locator('input[data-action="prompt-text"]').fill("a blue square drifts");
  await row.locator('input[data-action="prompt-text"]').press("Enter");
  check(await lastEdits() === "prompt,reroll", "re-roll and prompt", await widgetEdits());
  check((await widgetEdits()).some((e) => e.op === "prompt" && e.text === "a blue square drifts"), "the prompt text");
  await view([10, EDITOR]);
  const pickTarget = row.locator(`.mmpl-kf[data-frame="${EXPECT.frames[0]}"]`);
  await pickTarget.hover();
  await pickTarget.locator('button[data-action="pick"]').click();
  await nodeStrip(10).locator(`.mmpl-kf[data-segment="0"][data-frame="${EXPECT.frames[2]}"]`).click();
  await page.waitForFunction(() => !document.body.classList.contains("mmpl-picking"));
  await page.waitForFunction(([k]) => JSON.parse(window.app.graph.getNodeById(11).widgets.find((w) => w.name === "edits").value)
    .edits.some((e) => e.segment === k && e.op === "replace" && e.image.startsWith("mmpl/pick_")), [last]);
  check(await lastEdits() === "replace", "a picked keyframe replaces re-roll and prompt", await widgetEdits());
  await shot("04b_editor_controls");
  await row.locator('button[data-action="reset"]').click();
  check(await lastEdits() === "", "reset drops the segment's edits", await widgetEdits());
  check(JSON.stringify(await widgetEdits()) === JSON.stringify(edits), "the other edits stay", await widgetEdits());

  // 5. Run again: segments before the edit are kept, the edited one and those after it change.
  timings.run2 = await runAndWait(2);
  log("run 2 done");
  const second = { [PREVIEW]: await strip(PREVIEW), [CHAIN]: await strip(CHAIN) };
  for (const id of [PREVIEW, CHAIN]) {
    const before = first[id].rows, after = second[id].rows;
    check(second[id].plan !== first[id].plan, `node ${id}: a new plan`);
    for (let k = 0; k < EXPECT.segments; k++) {
      const same = after[k].files.filter((file, i) => file === before[k].files[i]).length;
      if (k < segment) check(same === after[k].files.length && !after[k].changed, `node ${id} S${k + 1}: unchanged`, after[k]);
      else check(same === 0 && after[k].changed, `node ${id} S${k + 1}: changed`, after[k]);
    }
    check(second[id].head.includes(`${EXPECT.segments - segment} changed`), `node ${id}: changed count`, second[id].head);
  }
  check(second[PREVIEW].rows.every((r) => r.status === "done"), "populated again", second[PREVIEW].rows);
  const replaced = second[PREVIEW].rows[segment].files[EXPECT.frames.indexOf(frame)];
  await view([CHAIN, PREVIEW, POPULATOR]);
  await shot("05_run2_strips");

  // 6. The README's pictures: the editor with its edit, and the re-planned plan's strip (kept, changed, done).
  await shot("06_editor", await view([EDITOR]));
  await shot("07_strip", await view([PREVIEW]));

  const ours = errors.filter((e) => PACK_URLS.test(e.url) || !KNOWN_ERRORS.some((known) => known.test(e.text)));
  fs.writeFileSync(path.join(ARTIFACTS, "console_errors.json"), JSON.stringify(errors, null, 1));
  check(!ours.length, "console errors besides ComfyUI's known ones", ours);
  timings.total = Date.now() - started;
  fs.writeFileSync(path.join(ARTIFACTS, "result.json"), JSON.stringify({
    ok: true, timings, replace, replaced_file: replaced, first_plan: first[PREVIEW].plan, second_plan: second[PREVIEW].plan,
  }, null, 1));
  log("ok", JSON.stringify(timings));
} catch (error) {
  if (page) await page.screenshot({ path: path.join(ARTIFACTS, "failure.png") }).catch(() => {});
  fs.writeFileSync(path.join(ARTIFACTS, "console_errors.json"), JSON.stringify(errors, null, 1));
  fs.writeFileSync(path.join(ARTIFACTS, "failure.txt"), `${error.stack}\n`);
  console.error("FAILED:", error.message);
  process.exitCode = 1;
} finally {
  await context.close();
  fs.rmSync(userDir, { recursive: true, force: true });
}
