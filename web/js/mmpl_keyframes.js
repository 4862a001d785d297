// MMPL Long Video in the browser: keyframe strips on the planner, preview and editor nodes, editing controls on the
// Keyframe Editor, and populate progress (the server's "mmpl.segment" messages) on the strips and the populator.
// Works on the classic canvas and in Nodes 2.0 (Vue nodes), for nodes in subgraphs too (their execution ids look like
// "12:5"). What a strip or progress panel shows is kept in the node's properties, so it survives a page reload and
// reopening the workflow.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { KeyframeStrip, el } from "./keyframe_strip.js";
import { KeyframeEditor, parseEdits, pickKeyframe } from "./keyframe_editor.js";

const STRIP_NODES = new Set(["MMPL_MicroPlanner", "MMPL_MacroChain", "MMPL_KeyframePreview", "MMPL_KeyframeEditor"]);
const POPULATOR = "MMPL_ContentPopulator";
const MAX_WIDTH = 900;
const SAVED_STRIP = "mmpl_strip", SAVED_PROGRESS = "mmpl_progress"; // node.properties keys

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

/** Image files of `keyframes` the server no longer has (its temp folder is emptied when ComfyUI restarts). */
async function missingFiles(keyframes) {
  const files = [...new Set(keyframes.flatMap((kf) => [kf.filename, kf.thumb]).filter(Boolean))];
  try {
    const response = await api.fetchApi("/mmpl/keyframes/missing", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ files }) });
    return response.ok ? (await response.json()).missing : [];
  } catch {
    return [];
  }
}

let capture = 0;

/** Keep `value` in the node's properties (saved with the workflow). The frontend notices changed properties only
 *  when it next compares the graph with its last copy (after user input), so ask it to compare now: the copy it
 *  keeps for a page reload then holds the strip even if the page is reloaded right after a run. */
function remember(node, key, value) {
  node.properties ??= {};
  if (value === null) delete node.properties[key];
  else node.properties[key] = value;
  clearTimeout(capture);
  capture = setTimeout(() => {
    const tracker = app.extensionManager?.workflow?.activeWorkflow?.changeTracker;
    (tracker?.captureCanvasState ?? tracker?.checkState)?.call(tracker); // the newer name, then the 1.32 one
  }, 200);
}

/** Show the strip a loaded workflow saved with the node, unless the node ran meanwhile. */
async function restoreStrip(node, strip) {
  const saved = node.properties?.[SAVED_STRIP];
  if (!saved?.output?.mmpl_plan || strip.output) return;
  const version = strip.version;
  const missing = await missingFiles(saved.output.mmpl_keyframes ?? []);
  if (strip.version !== version) return;
  strip.setOutput(saved.output, { statuses: saved.statuses, missing, joins: saved.joins });
  fitNode(node, strip.contentSize().width);
}

function addStrip(node) {
  let editor = null;
  const widget = node.comfyClass === "MMPL_KeyframeEditor" ? node.widgets?.find((w) => w.name === "edits") : null;
  if (widget) {
    editor = new KeyframeEditor(widget, () => node.graph?.setDirtyCanvas(true, true));
    // JSON typed by hand (the widget's callback: its DOM textarea on the canvas, a Vue component in Nodes 2.0).
    chain(widget, "callback", () => editor.strip?.render());
  }
  // Any strip's keyframe can be picked as an editor's replacement (see keyframe_editor.js).
  const strip = new KeyframeStrip(editor ? editor.hooks() : { thumbClick: pickKeyframe });
  strip.hooks.changed = () => remember(node, SAVED_STRIP, strip.saved());
  if (editor) editor.strip = strip;
  node.mmplStrip = strip;
  addPanel(node, "mmpl_strip", strip.element, () => strip.contentSize().height);
  chain(node, "onConfigure", () => {
    strip.element.dataset.node = String(node.id);
    strip.render(); // a loaded workflow sets the editor's widget after nodeCreated: show its edits once it is there
    restoreStrip(node, strip);
  });
  if (editor) node.mmplEditor = editor;
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
  let shown = { plan: null, states: {} }; // states: segment → {status, worker}
  const render = () => {
    const states = Object.entries(shown.states).map(([k, s]) => [Number(k), s]);
    chips.replaceChildren(...states.map(([k, s]) => el("span", {
      class: "mmpl-chip", "data-segment": k, "data-status": s.status,
      text: `S${k + 1} ${s.status}${s.status === "populating" && s.worker ? ` · ${s.worker}` : ""}`,
    })));
    const done = states.filter(([, s]) => s.status === "done").length;
    const running = states.filter(([, s]) => s.status === "populating").length;
    panel.querySelector(".mmpl-summary").textContent = states.length
      ? `${done}/${states.length} done${running ? `, ${running} populating` : ""}` : "waiting for a run";
    const height = chips.offsetTop + chips.offsetHeight + 6 + 20; // + the widget margins
    if (height > node.mmplProgressHeight) {
      node.mmplProgressHeight = height;
      fitNode(node, node.size[0]);
    }
  };
  node.mmplProgress = (detail) => {
    panel.dataset.node = String(node.id);
    if (detail.plan !== shown.plan) {
      const states = {};
      for (let k = 0; k < detail.segments; k++) states[k] = { status: "planned", worker: "" };
      shown = { plan: detail.plan, states };
    }
    shown.states[detail.segment] = { status: detail.status, worker: detail.worker };
    remember(node, SAVED_PROGRESS, shown);
    render();
  };
  chain(node, "onConfigure", () => {
    panel.dataset.node = String(node.id);
    const saved = node.properties?.[SAVED_PROGRESS];
    if (saved?.states && !shown.plan) {
      shown = saved;
      render();
    }
  });
  node.mmplProgressHeight = 64;
  addPanel(node, "mmpl_progress", panel, () => node.mmplProgressHeight);
}

/** Every node of the workflow, those inside subgraphs included. */
function allNodes() {
  const root = app.rootGraph ?? app.graph;
  if (!root) return [];
  return [root, ...(root.subgraphs?.values() ?? [])].flatMap((graph) => graph.nodes ?? graph._nodes ?? []);
}

/** The node an execution id names: "7" in the workflow, "12:5" node 5 inside subgraph node 12, and so on. */
export function nodeByExecutionId(id) {
  let graph = app.rootGraph ?? app.graph, node = null;
  for (const part of String(id).split(":")) {
    if (node) graph = node.subgraph;
    node = graph?.getNodeById(Number(part)) ?? null;
    if (!node) return null;
  }
  return node;
}

app.registerExtension({
  name: "mmpl.keyframes",
  async setup() {
    api.addEventListener("mmpl.segment", ({ detail }) => {
      for (const node of allNodes()) {
        if (node.mmplStrip?.planId === detail.plan) node.mmplStrip.setStatus(detail.segment, detail.status, detail.worker);
      }
      nodeByExecutionId(detail.node)?.mmplProgress?.(detail);
    });
  },
  async nodeCreated(node) {
    if (STRIP_NODES.has(node.comfyClass)) addStrip(node);
    if (node.comfyClass === POPULATOR) addProgress(node);
  },
});
