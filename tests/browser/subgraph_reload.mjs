// The browser test's second half (keyframe_strip.mjs runs it after the edit → re-plan flow):
// - subgraph (in one configuration, to keep the test short): Keyframe Editor, Macro Chain, its preview, Save Plan and Content Populator become a subgraph, as the
//   "Convert Selection to Subgraph" command does it; inside it, a re-roll and a run must reach the right nodes
//   (strips and live status, under execution ids like "25:12");
// - reloads: a page reload, then closing and reopening the workflow, show every strip and the populate status as
//   they were, from what the nodes saved with the workflow; a saved strip whose image files the server no longer has
//   says so instead of showing broken images.
import { log, readStrip, runAndWait, stripOf, stripsLoaded, view } from "./lib.mjs";

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const shown = (strip) => ({ plan: strip.plan, head: strip.head, roles: strip.roles,
                            rows: strip.rows.map(({ loaded, ...row }) => row) });

/** Convert, re-roll the last segment inside, run; returns the execution ids of the nodes inside. */
export async function subgraph({ page, shot, check, EXPECT }, { run2, editor, chain, preview, populator }) {
  const before = { [chain]: shown(run2[chain]), [preview]: shown(run2[preview]) };
  const made = await page.evaluate(async (ids) => {
    const { app } = window;
    app.canvas.selectItems(ids.map((id) => app.graph.getNodeById(id)));
    await app.extensionManager.command.execute("Comfy.Graph.ConvertToSubgraph");
    const node = app.graph.nodes.find((n) => n.subgraph);
    app.canvas.openSubgraph(node.subgraph, node);
    return { id: node.id, inner: Object.fromEntries(node.subgraph.nodes.map((n) => [n.comfyClass, n.id])) };
  }, [editor, chain, preview, 14, populator]);
  const local = { editor: made.inner.MMPL_KeyframeEditor, chain: made.inner.MMPL_MacroChain,
                  preview: made.inner.MMPL_KeyframePreview, populator: made.inner.MMPL_ContentPopulator };
  check(Object.values(local).every((id) => id !== undefined), "the subgraph holds the nodes", made);
  const exec = Object.fromEntries(Object.entries(local).map(([k, id]) => [k, `${made.id}:${id}`]));
  log("subgraph", made.id, JSON.stringify(local));

  // The converted nodes keep their strips.
  await view(page, [local.chain, local.preview, local.editor]);
  await stripsLoaded(page, [exec.chain, exec.preview, exec.editor]);
  for (const [k, id] of [["chain", chain], ["preview", preview]]) {
    check(same(shown(await readStrip(page, exec[k])), before[id]), `${k}: the strip survives the conversion`);
  }

  // Re-roll the last segment in the editor inside the subgraph and run.
  const last = EXPECT.segments - 1;
  await view(page, [local.editor]);
  await stripOf(page, local.editor).locator(`.mmpl-row[data-segment="${last}"] button[data-action="reroll"]`).click();
  await page.evaluate(() => window.__mmpl.events.splice(0));
  const strips = [exec.chain, exec.preview, exec.editor];
  await runAndWait(page, 3, strips);
  log("run 3 (in the subgraph) done");

  const events = await page.evaluate(() => window.__mmpl.events.splice(0));
  check(events.length && events.every((e) => e.node === exec.populator), "progress names the populator inside", events);
  for (let k = 0; k < EXPECT.segments; k++) {
    const seen = events.filter((e) => e.segment === k).map((e) => e.status);
    check(same(seen, ["planned", "populating", "done"]), `subgraph S${k + 1}: populate progress`, seen);
  }
  await view(page, [local.populator]);
  const progress = page.locator(`[data-mmpl-progress][data-node="${local.populator}"]`).filter({ visible: true });
  check(await progress.locator('.mmpl-chip[data-status="done"]').count() === EXPECT.segments, "the inner populator's chips");
  for (const k of ["chain", "preview"]) {
    const strip = await readStrip(page, exec[k]);
    const old = before[k === "chain" ? chain : preview];
    check(strip.plan !== old.plan, `${k}: a new plan inside the subgraph`);
    strip.rows.forEach((row, s) => check(s < last ? same(row.files, old.rows[s].files) : !same(row.files, old.rows[s].files),
                                         `${k} S${s + 1}: ${s < last ? "kept" : "re-rolled"}`, row));
    check(strip.rows.every((row) => row.status === "done"), `${k}: populated`, strip.rows);
  }
  await shot("08_subgraph", await view(page, [local.chain, local.preview, local.editor, local.populator]));
  return { exec, local, subgraphNode: made.id };
}

/** Page reload, then closing and reopening the workflow; then a saved strip whose images are gone. `outer`: strip
 *  nodes of the workflow; `inner`: the editor, chain, preview and populator, in subgraph node `subgraphNode` (null:
 *  in the workflow itself) with their local and execution ids. */
export async function reloads({ page, shot, check, URL }, { outer, inner }) {
  const { exec, local, subgraphNode } = inner;
  const ids = [...outer.map(String), exec.chain, exec.preview, exec.editor];
  const record = async () => Object.fromEntries(await Promise.all(ids.map(async (id) => [id, shown(await readStrip(page, id))])));
  const progress = () => page.evaluate((id) => JSON.stringify(window.__node(id).properties.mmpl_progress), exec.populator);
  const before = await record(), progressBefore = await progress();
  const expectSame = async (what) => {
    const now = await record();
    for (const id of ids) check(same(now[id], before[id]), `${what}: node ${id}'s strip`, { now: now[id], before: before[id] });
    check(await progress() === progressBefore, `${what}: populate status`);
    await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.Graph.ExitSubgraph"));
    await view(page, outer);
    await stripsLoaded(page, outer.map(String));
    if (subgraphNode !== null) {
      await page.evaluate((id) => window.app.canvas.openSubgraph(window.__node(id).subgraph, window.__node(id)), subgraphNode);
    }
    await view(page, [local.chain, local.preview, local.editor, local.populator]);
    await stripsLoaded(page, [exec.chain, exec.preview, exec.editor]);
    const chips = page.locator(`[data-mmpl-progress][data-node="${local.populator}"] .mmpl-chip[data-status="done"]`);
    check(await chips.filter({ visible: true }).count() === before[exec.preview].rows.length, `${what}: populator chips`);
  };

  await page.reload();
  await page.waitForFunction(() => window.app?.graph && window.app.extensions?.some((e) => e.name === "mmpl.keyframes"),
                             null, { timeout: 90_000 });
  await page.waitForFunction((id) => window.__node(id)?.mmplStrip?.planId, exec.preview);
  await expectSame("after a page reload");
  await shot("09_reloaded", await view(page, [local.chain, local.preview, local.editor, local.populator]));
  log("reload ok");

  // Close the workflow (another one in its place: no strips there), open it again.
  const saved = await page.evaluate(() => window.app.graph.serialize());
  await page.evaluate(async (url) => {
    const response = await fetch(url);
    await window.app.loadGraphData(await response.json());
  }, `${URL}/api/workflow_templates/mmpl_long_video/mmpl_long_t2v_demo.json`);
  check(!(await page.evaluate(() => document.querySelector("[data-mmpl-strip] .mmpl-row"))), "another workflow: no strips");
  await page.evaluate(async (workflow) => window.app.loadGraphData(workflow), saved);
  await page.waitForFunction((id) => window.__node(id)?.mmplStrip?.planId, exec.preview);
  await expectSame("after reopening the workflow");
  log("reopen ok");

  // A saved strip pointing at an image the server does not have: a note and a placeholder, no request for it.
  const gone = structuredClone(saved);
  const node = gone.nodes.find((n) => n.id === outer[1]);
  node.properties.mmpl_strip.output.mmpl_keyframes[0].thumb = "kf_gone_f0_thumb.png";
  await page.evaluate(async (workflow) => {
    await window.app.loadGraphData(workflow);
    await window.app.extensionManager.command.execute("Comfy.Graph.ExitSubgraph");
  }, gone);
  await page.waitForFunction((id) => window.__node(id)?.mmplStrip?.planId, String(outer[1]));
  await view(page, outer);
  await stripsLoaded(page, [String(outer[0])]);
  const strip = await readStrip(page, String(outer[1]));
  check(strip.message.includes("no longer on the server"), "missing images are reported", strip.message);
  check(strip.rows[0].files[0] === "" && strip.rows.slice(1).every((row) => row.files.every(Boolean)),
        "only the missing keyframe has no image", strip.rows.map((row) => row.files));
  await shot("10_images_gone", await view(page, [outer[1]]));
}
