// Join scores (nodes/join_ui.py): Content Populator and Decode Video show the join report as text, and every keyframe
// strip showing the same plan marks the joins above the thresholds (the server's "mmpl.joins" messages).
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const REPORT_NODES = new Set(["MMPL_ContentPopulator", "MMPL_DecodeVideo"]);

function showReport(node, text) {
  if (!node.mmplJoinText) {
    const pre = document.createElement("pre");
    pre.className = "mmpl-joins-text";
    pre.dataset.mmplJoins = "";
    const widget = node.addDOMWidget("mmpl_joins", "mmpl_panel", pre, {
      serialize: false, hideOnZoom: false, getMinHeight: () => pre.scrollHeight + 8,
    });
    widget.serialize = false;
    node.mmplJoinText = pre;
  }
  node.mmplJoinText.textContent = text;
  node.setSize?.([Math.max(node.size[0], 380), Math.max(node.size[1], node.computeSize()[1])]);
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "mmpl.joins",
  async setup() {
    api.addEventListener("mmpl.joins", ({ detail }) => {
      for (const node of app.graph?.nodes ?? app.graph?._nodes ?? []) {
        if (node.mmplStrip?.planId === detail.plan) node.mmplStrip.setJoins?.(detail);
      }
    });
  },
  async nodeCreated(node) {
    if (!REPORT_NODES.has(node.comfyClass)) return;
    const before = node.onExecuted;
    node.onExecuted = function (output) {
      const result = before?.apply(this, arguments);
      if (output?.mmpl_joins && output?.text?.length) showReport(this, output.text[0]);
      return result;
    };
  },
});
