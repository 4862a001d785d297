// The real-model templates (example_workflows/mmpl_wan14b_*.json) as a user opens them, in the newest frontend:
// each loads without a console error, with every node known (the pack's and ComfyUI's own) and every widget value
// kept, and is photographed whole. Run by tests/browser/test_browser_templates.py (settings through environment
// variables; a screenshot per template goes to $ARTIFACTS, the checks to result.json).
import fs from "node:fs";
import path from "node:path";
import { check, env, launch, log, openComfy, unexpectedErrors, view } from "./lib.mjs";

const URL = env("COMFY_URL");
const ARTIFACTS = env("ARTIFACTS");
const TEMPLATES = JSON.parse(env("TEMPLATES")); // [path, ...]

const { page, errors, shot, close } = await launch(ARTIFACTS);
const result = { templates: {} };
try {
  result.version = await openComfy(page, URL, false);
  // large enough to draw the whole graph at 1:1, so the picture shows titles and widget values
  await page.setViewportSize({ width: 2300, height: 1250 });
  for (const file of TEMPLATES) {
    const name = path.basename(file, ".json");
    const workflow = JSON.parse(fs.readFileSync(file, "utf8"));
    await page.evaluate(async (workflow) => window.app.loadGraphData(workflow), workflow);
    const loaded = await page.evaluate(() => ((window.app.rootGraph ?? window.app.graph).nodes).map((n) => ({
      id: n.id, type: n.type, known: !!window.LiteGraph.registered_node_types[n.type],
      widgets: (n.widgets ?? []).map((w) => w.value),
    })));
    const missing = loaded.filter((n) => !n.known).map((n) => n.type);
    check(!missing.length, `${name}: nodes the frontend does not know`, missing);
    for (const node of workflow.nodes) {
      const got = loaded.find((n) => String(n.id) === String(node.id));
      check(got, `${name}: node ${node.id} (${node.type}) is in the loaded graph`, loaded.map((n) => n.id));
      const want = node.widgets_values.filter((v) => v !== "fixed" && v !== "image");
      check(want.every((v) => got.widgets.includes(v)), `${name}: widget values of ${node.type}`, { want, got });
    }
    await page.evaluate(() => document.querySelectorAll(".p-toast-message").forEach((t) => t.remove()));
    await shot(name, await view(page, loaded.map((n) => n.id)));
    result.templates[name] = { nodes: loaded.length };
    log(name, "loaded", loaded.length, "nodes");
  }
  result.errors = unexpectedErrors(errors);
  check(!result.errors.length, "console errors", result.errors);
} finally {
  fs.writeFileSync(path.join(ARTIFACTS, "result.json"), JSON.stringify(result, null, 1));
  await close();
}
