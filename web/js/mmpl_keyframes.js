// MMPL Long Video in the browser: keyframe strips on the planner, preview and editor nodes, editing controls on the
// Keyframe Editor, and populate progress (the server's "mmpl.segment" messages) on the strips and the populator.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { KeyframeStrip, el } from "./keyframe_strip.js";
import { KeyframeEditor, parseEdits, pickKeyframe } from "./keyframe_editor.js";

const STRIP_NODES = new Set(["MMPL_MicroPlanner", "MMPL_MacroChain", "MMPL_KeyframePreview", "MMPL_KeyframeEditor"]);
const POPULATOR = "MMPL_ContentPopulator";
const MAX_WIDTH = 900;

document.head.append(el("link", { rel: "stylesheet", href: new URL("./mmpl.css", import.meta.url).href }));

function chain(object, method, after) {
  const before = object[method];
  object[method] = function (...args) {
    const result = before?.apply(this, args);
    after.apply(this, args);
    return result;
  };
}

function addPanel(node, name, element, getHeight) {
  const widget = node.addDOMWidget(name, "mmpl_panel", element, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: getHeight,
    getMaxHeight: getHeight,
  });
  widget.serialize = false; // not part of widgets_values, so saved workflows stay as the server expects
  return widget;
}

/** Grow the node (never shrink it) so the strip shows every keyframe column without overlapping other widgets. */
function fitNode(node, width) {
  const needed = node.computeSize();
  const size = [Math.max(node.size[0], Math.min(width, MAX_WIDTH), needed[0]), Math.max(node.size[1], needed[1])];
  if (size[0] !== node.size[0] || size[1] !== node.size[1]) node.setSize(size);
  node.setDirtyCanvas?.(true, true);
}

function addStrip(node) {
  let editor = null;
  const widget = node.comfyClass === "MMPL_KeyframeEditor" ? node.widgets?.find((w) => w.name === "edits") : null;
  if (widget) {
    editor = new KeyframeEditor(widget, () => node.graph?.setDirtyCanvas(true, true));
    widget.inputEl?.addEventListener("input", () => editor.strip.render()); // JSON typed by hand
  }
  // Any strip's keyframe can be picked as an editor's replacement (see keyframe_editor.js).
  const strip = new KeyframeStrip(editor ? editor.hooks() : { thumbClick: pickKeyframe });
  if (editor) editor.strip = strip;
  node.mmplStrip = strip;
  addPanel(node, "mmpl_strip", strip.element, () => strip.contentSize().height);
  if (editor) {
    // A loaded workflow sets the widget after nodeCreated: show its edits once it is there.
    chain(node, "onConfigure", () => strip.render());
    node.mmplEditor = editor;
  }
  chain(node, "onExecuted", (output) => {
    if (!output?.mmpl_plan) return;
    strip.element.dataset.node = String(node.id);
    strip.setOutput(output);
    if (editor && parseEdits(editor.widget.value) === null) strip.setMessage("The edits JSON cannot be read; fix it to use the buttons.");
    fitNode(node, strip.contentSize().width);
  });
}

function addProgress(node) {
  const chips = el("div", { class: "mmpl-progress" });
  const panel = el("div", { class: "mmpl-strip", "data-mmpl-progress": "" },
                   el("div", { class: "mmpl-strip-head" }, el("span", { class: "mmpl-title", text: "segments" }),
                      el("span", { class: "mmpl-summary", text: "waiting for a run" })), chips);
  const states = new Map();
  node.mmplProgress = (detail) => {
    if (!states.size || detail.plan !== node.mmplProgressPlan) {
      states.clear();
      node.mmplProgressPlan = detail.plan;
      for (let k = 0; k < detail.segments; k++) states.set(k, { status: "planned", worker: "" });
    }
    states.set(detail.segment, { status: detail.status, worker: detail.worker });
    chips.replaceChildren(...[...states].map(([k, s]) => el("span", {
      class: "mmpl-chip", "data-segment": k, "data-status": s.status,
      text: `S${k + 1} ${s.status}${s.status === "populating" && s.worker ? ` · ${s.worker}` : ""}`,
    })));
    const done = [...states.values()].filter((s) => s.status === "done").length;
    const running = [...states.values()].filter((s) => s.status === "populating").length;
    panel.querySelector(".mmpl-summary").textContent = `${done}/${states.size} done${running ? `, ${running} populating` : ""}`;
    const height = chips.offsetTop + chips.offsetHeight + 6 + 20; // + the widget margins
    if (height > node.mmplProgressHeight) {
      node.mmplProgressHeight = height;
      fitNode(node, node.size[0]);
    }
  };
  node.mmplProgressHeight = 64;
  addPanel(node, "mmpl_progress", panel, () => node.mmplProgressHeight);
}

function graphNodes() {
  return app.graph?.nodes ?? app.graph?._nodes ?? [];
}

app.registerExtension({
  name: "mmpl.keyframes",
  async setup() {
    api.addEventListener("mmpl.segment", ({ detail }) => {
      for (const node of graphNodes()) {
        if (node.mmplStrip?.planId === detail.plan) node.mmplStrip.setStatus(detail.segment, detail.status, detail.worker);
      }
      const populator = app.graph?.getNodeById(Number(detail.node));
      populator?.mmplProgress?.(detail);
    });
  },
  async nodeCreated(node) {
    if (STRIP_NODES.has(node.comfyClass)) addStrip(node);
    if (node.comfyClass === POPULATOR) addProgress(node);
  },
});
