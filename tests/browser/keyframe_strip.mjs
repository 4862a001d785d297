// Drives the real ComfyUI of the test suite in Debian's Chromium (playwright-core from .browser/, set up by
// scripts/setup_browser.sh), in one configuration (frontend, classic canvas or Nodes 2.0): load the
// plan-edit-populate example, run it, check the keyframe strips and live populate status, use every Keyframe Editor
// control (replace a keyframe by an upload), run again and compare; then subgraphs and reloads
// (subgraph_reload.mjs). Run by tests/browser/test_browser_keyframes.py, which passes everything through environment
// variables and checks result.json; a screenshot of each step goes to $ARTIFACTS. Exits non-zero on the first failed
// check.
import fs from "node:fs";
import path from "node:path";
import { check, env, launch, log, openComfy, readStrip, runAndWait, stripOf, unexpectedErrors, view, widgetEdits }
  from "./lib.mjs";
import { reloads, subgraph } from "./subgraph_reload.mjs";

const URL = env("COMFY_URL");
const ARTIFACTS = env("ARTIFACTS");
const WORKFLOW = JSON.parse(fs.readFileSync(env("WORKFLOW"), "utf8"));
const REPLACEMENT = env("REPLACEMENT"); // the image file the user uploads
const EXPECT = JSON.parse(env("EXPECT")); // {segments, captions: [[...per segment]], roles, frames, edit: {segment, frame}}
const VUE = env("NODES2") === "1";
const PREVIEW = 13, CHAIN = 12, EDITOR = 11, POPULATOR = 20, STRIPS = [6, 10, 11, 12, 13];

const started = Date.now();
const timings = {};
const { page, errors, shot, close } = await launch(ARTIFACTS);
const ctx = { page, shot, check, EXPECT, VUE, URL, WORKFLOW };
try {
  // 1. Load ComfyUI and the example workflow; plan with 2 steps and no CFG, to keep the runs short on a CPU.
  const version = await openComfy(page, URL, VUE);
  check(version === env("FRONTEND_VERSION"), "the frontend version", version);
  await page.evaluate(async (workflow) => {
    await window.app.loadGraphData(workflow);
    for (const id of [6, 12]) {
      const widgets = window.__node(id).widgets;
      widgets.find((w) => w.name === "steps").value = 2;
      widgets.find((w) => w.name === "cfg").value = 1;
    }
  }, WORKFLOW);
  timings.load = Date.now() - started;
  await shot("01_loaded", await view(page, [6, 10, 11, 12]));

  // 2. Run: every planner / preview / editor shows its strip, labelled; populating shows live.
  timings.run1 = await runAndWait(page, 1, STRIPS);
  log("run 1 done");
  const first = {};
  for (const id of STRIPS) {
    first[id] = await readStrip(page, id);
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
  await shot("02_run1_strips", await view(page, [CHAIN, PREVIEW, POPULATOR]));

  // 3. A click on a keyframe shows it large.
  await view(page, [10]);
  await stripOf(page, 10).locator(`.mmpl-kf[data-segment="0"][data-frame="6"]`).click();
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
  await view(page, [EDITOR]);
  const editor = stripOf(page, EDITOR);
  const target = editor.locator(`.mmpl-kf[data-segment="${segment}"][data-frame="${frame}"]`);
  await target.hover();
  const chooser = page.waitForEvent("filechooser");
  await target.locator('button[data-action="upload"]').click();
  await (await chooser).setFiles(REPLACEMENT);
  await page.waitForFunction(([k, f]) => {
    const edits = JSON.parse(window.__node(11).widgets.find((w) => w.name === "edits").value).edits;
    return edits.some((e) => e.op === "replace" && e.segment === k && e.frame === f);
  }, [segment, frame]);
  await editor.locator(`.mmpl-kf.mmpl-replaced[data-segment="${segment}"][data-frame="${frame}"] img`).waitFor();
  await page.mouse.move(5, 400);
  const edited = await page.evaluate(() => {
    const node = window.__node(11);
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
  // supersedes both), then reset, which leaves the edits as they were; then JSON typed by hand.
  const last = EXPECT.segments - 1;
  const lastEdits = async () => (await widgetEdits(page, EDITOR)).filter((e) => e.segment === last).map((e) => e.op).join(",");
  const row = editor.locator(`.mmpl-row[data-segment="${last}"]`);
  await row.locator('button[data-action="reroll"]').click();
  await row.locator('button[data-action="prompt"]').click();
  await row.locator('input[data-action="prompt-text"]').fill("a blue square drifts");
  await row.locator('input[data-action="prompt-text"]').press("Enter");
  check(await lastEdits() === "prompt,reroll", "re-roll and prompt", await widgetEdits(page, EDITOR));
  check((await widgetEdits(page, EDITOR)).some((e) => e.op === "prompt" && e.text === "a blue square drifts"), "the prompt text");
  await view(page, [10, EDITOR]);
  const pickTarget = row.locator(`.mmpl-kf[data-frame="${EXPECT.frames[0]}"]`);
  await pickTarget.hover();
  await pickTarget.locator('button[data-action="pick"]').click();
  await stripOf(page, 10).locator(`.mmpl-kf[data-segment="0"][data-frame="${EXPECT.frames[2]}"]`).click();
  await page.waitForFunction(() => !document.body.classList.contains("mmpl-picking"));
  await page.waitForFunction(([k]) => JSON.parse(window.__node(11).widgets.find((w) => w.name === "edits").value)
    .edits.some((e) => e.segment === k && e.op === "replace" && e.image.startsWith("mmpl/pick_")), [last]);
  check(await lastEdits() === "replace", "a picked keyframe replaces re-roll and prompt", await widgetEdits(page, EDITOR));
  await shot("04b_editor_controls");
  await row.locator('button[data-action="reset"]').click();
  check(await lastEdits() === "", "reset drops the segment's edits", await widgetEdits(page, EDITOR));
  check(JSON.stringify(await widgetEdits(page, EDITOR)) === JSON.stringify(edits), "the other edits stay");
  await typeEdits(page, "{\"edits\": [");
  await editor.locator(".mmpl-chip.mmpl-pending", { hasText: "edits JSON unreadable" }).waitFor();
  check(await row.locator('button[data-action="reroll"]').isDisabled(), "unreadable JSON disables the buttons");
  await typeEdits(page, edited.value);
  await editor.locator(".mmpl-chip.mmpl-pending", { hasText: "2 edited" }).waitFor();
  check(JSON.stringify(await widgetEdits(page, EDITOR)) === JSON.stringify(edits), "the JSON typed back");

  // 5. Run again: segments before the edit are kept, the edited one and those after it change.
  timings.run2 = await runAndWait(page, 2, STRIPS);
  log("run 2 done");
  const second = { [PREVIEW]: await readStrip(page, PREVIEW), [CHAIN]: await readStrip(page, CHAIN) };
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
  await shot("05_run2_strips", await view(page, [CHAIN, PREVIEW, POPULATOR]));

  // 6. The README's pictures: the editor with its edit, and the re-planned plan's strip (kept, changed, done).
  await shot("06_editor", await view(page, [EDITOR]));
  await shot("07_strip", await view(page, [PREVIEW]));

  // 7. The same flow inside a subgraph (SUBGRAPH=1), then page reloads and reopening the workflow.
  const t3 = Date.now();
  const roles = { editor: EDITOR, chain: CHAIN, preview: PREVIEW, populator: POPULATOR };
  const inner = process.env.SUBGRAPH === "1" ? await subgraph(ctx, { run2: second, ...roles })
    : { local: roles, exec: Object.fromEntries(Object.entries(roles).map(([k, id]) => [k, String(id)])), subgraphNode: null };
  timings.subgraph = Date.now() - t3;
  const t4 = Date.now();
  await reloads(ctx, { outer: [6, 10], inner });
  timings.reloads = Date.now() - t4;

  const ours = unexpectedErrors(errors);
  fs.writeFileSync(path.join(ARTIFACTS, "console_errors.json"), JSON.stringify(errors, null, 1));
  check(!ours.length, "console errors besides ComfyUI's known ones", ours);
  timings.total = Date.now() - started;
  fs.writeFileSync(path.join(ARTIFACTS, "result.json"), JSON.stringify({
    ok: true, version, vue: VUE, timings, replace, replaced_file: replaced, first_plan: first[PREVIEW].plan,
    second_plan: second[PREVIEW].plan,
  }, null, 1));
  log("ok", JSON.stringify(timings));
} catch (error) {
  await page.screenshot({ path: path.join(ARTIFACTS, "failure.png") }).catch(() => {});
  fs.writeFileSync(path.join(ARTIFACTS, "console_errors.json"), JSON.stringify(errors, null, 1));
  fs.writeFileSync(path.join(ARTIFACTS, "failure.txt"), `${error.stack}\n`);
  console.error("FAILED:", error.message);
  process.exitCode = 1;
} finally {
  await close();
}

/** Type into the Keyframe Editor's edits field, as a user would (a textarea on the canvas or in the Vue node). */
async function typeEdits(page, text) {
  const box = VUE ? page.locator(`[data-node-id="${EDITOR}"] textarea`).first()
    : (await page.evaluateHandle((id) => {
      const widget = window.__node(id).widgets.find((w) => w.name === "edits");
      return widget.element ?? widget.inputEl;
    }, EDITOR)).asElement();
  await box.fill(text);
}
