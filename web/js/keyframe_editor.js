// Keyframe Editor controls on top of the strip: per segment lock / re-roll / prompt / reset, per keyframe replace with
// an uploaded image or with a keyframe picked from any strip. Every action rewrites the node's `edits` JSON widget
// (mmpl_core/edits.py's format), so saving or sharing the workflow keeps the edits.
import { api } from "../../../scripts/api.js";
import { el, viewUrl } from "./keyframe_strip.js";

const UPLOAD_SUBFOLDER = "mmpl";
// Re-roll and a new prompt drop a segment's keyframes; lock and replace keep (and lock) them: one kind per segment.
const REGENERATE = new Set(["reroll", "prompt"]);
const OP_ORDER = ["prompt", "reroll", "replace", "unlock", "lock"];

/** The edits of a widget value: an array, or null when the JSON cannot be read (then the UI leaves it alone). */
export function parseEdits(text) {
  if (!text || !text.trim()) return [];
  try {
    const doc = JSON.parse(text);
    const edits = Array.isArray(doc) ? doc : doc?.edits ?? [];
    return Array.isArray(edits) && edits.every((e) => e && typeof e === "object") ? edits : null;
  } catch {
    return null;
  }
}

export function formatEdits(edits) {
  const sorted = [...edits].sort((a, b) => (a.segment - b.segment) || (OP_ORDER.indexOf(a.op) - OP_ORDER.indexOf(b.op))
                                           || ((a.frame ?? 0) - (b.frame ?? 0)));
  if (!sorted.length) return '{"edits": []}';
  return `{"edits": [\n${sorted.map((e) => `  ${JSON.stringify(e)}`).join(",\n")}\n]}`;
}

/** Edits after one user action on segment k; `keep` filters the segment's existing edits. */
function withSegment(edits, k, keep, ...added) {
  return [...edits.filter((e) => e.segment !== k || keep(e)), ...added];
}

export const actions = {
  lock(edits, k, inputLocked) {
    const current = edits.filter((e) => e.segment === k && (e.op === "lock" || e.op === "unlock")).at(-1);
    const locked = current ? current.op === "lock" : inputLocked;
    const rest = withSegment(edits, k, (e) => e.op === "replace");
    return locked === inputLocked ? [...rest, { op: locked ? "unlock" : "lock", segment: k }] : rest;
  },
  reroll(edits, k, seed) {
    return withSegment(edits, k, (e) => e.op === "prompt", { op: "reroll", segment: k, seed });
  },
  prompt(edits, k, text) {
    const rest = withSegment(edits, k, (e) => e.op === "reroll");
    return text.trim() ? [...rest, { op: "prompt", segment: k, text: text.trim() }] : rest;
  },
  replace(edits, k, frame, image) {
    const keep = (e) => !REGENERATE.has(e.op) && e.op !== "unlock" && !(e.op === "replace" && e.frame === frame);
    return withSegment(edits, k, keep, { op: "replace", segment: k, frame, image });
  },
  reset(edits, k) {
    return withSegment(edits, k, () => false);
  },
};

/** An image (Blob) drawn at the video's size (scaled to cover, centred) → PNG Blob. */
export async function fitToVideo(blob, width, height) {
  const bitmap = await createImageBitmap(blob);
  const canvas = Object.assign(document.createElement("canvas"), { width, height });
  const scale = Math.max(width / bitmap.width, height / bitmap.height);
  const w = bitmap.width * scale, h = bitmap.height * scale;
  canvas.getContext("2d").drawImage(bitmap, (width - w) / 2, (height - h) / 2, w, h);
  bitmap.close();
  return new Promise((resolve, reject) => canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("encoding failed"))), "image/png"));
}

/** POST /upload/image into input/mmpl; returns the name the edit refers to ("mmpl/<file>"). */
export async function uploadImage(blob, name) {
  const body = new FormData();
  body.append("image", new File([blob], name, { type: "image/png" }));
  body.append("subfolder", UPLOAD_SUBFOLDER);
  body.append("type", "input");
  const response = await api.fetchApi("/upload/image", { method: "POST", body });
  if (response.status !== 200) throw new Error(`upload failed: ${response.status} ${response.statusText}`);
  const saved = await response.json();
  return saved.subfolder ? `${saved.subfolder}/${saved.name}` : saved.name;
}

function inputImageUrl(image) {
  const parts = image.split("/");
  return viewUrl({ filename: parts.pop(), subfolder: parts.join("/"), type: "input" });
}

function safeName(text) {
  return text.replace(/\.[a-z0-9]+$/i, "").replace(/[^A-Za-z0-9_-]+/g, "_").slice(0, 60) || "image";
}

// One pick at a time, across all strips: {editor, segment, frame}.
let picking = null;

function setPicking(next) {
  picking?.editor.strip.setMessage(null);
  picking = next;
  document.body.classList.toggle("mmpl-picking", !!next);
  if (next) next.editor.strip.setMessage(`Click a keyframe in any strip to use it for S${next.segment + 1} f${next.frame} (Esc cancels)`, "info");
}

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && picking) setPicking(null);
});

/** Called by every strip's thumbnail click: true when the click completed a pick. */
export function pickKeyframe(kf) {
  if (!picking || !kf.filename) return false;
  const { editor, segment, frame } = picking;
  setPicking(null);
  editor.replaceWith(segment, frame, async () => {
    const response = await api.fetchApi(`/view?${new URLSearchParams({ filename: kf.filename, subfolder: kf.subfolder, type: kf.type })}`);
    if (!response.ok) throw new Error(`could not read the picked keyframe (${response.status})`);
    return { blob: await response.blob(), name: `pick_s${kf.segment + 1}_f${kf.frame}_${safeName(kf.filename)}.png` };
  });
  return true;
}

export class KeyframeEditor {
  /** widget: the node's `edits` widget; strip: the KeyframeStrip (built with this.hooks()); onChange: after writes. */
  constructor(widget, onChange) {
    this.widget = widget;
    this.onChange = onChange;
    this.strip = null;
    this.prompting = null; // segment whose prompt field is open
  }

  get edits() {
    return parseEdits(this.widget.value);
  }

  write(edits) {
    this.widget.value = formatEdits(edits);
    this.onChange?.();
    this.strip.render();
  }

  /** The strip hooks that add the editor's controls and show pending edits. */
  hooks() {
    return {
      showChanged: false, // the pending edits are what matters here; the re-planned strips show what changed
      headChips: () => this.headChips(),
      rowTools: (segment) => this.rowTools(segment),
      decorateRow: (row, segment) => this.decorateRow(row, segment),
      thumb: (kf) => this.thumb(kf),
      thumbActions: (kf) => this.thumbActions(kf),
      thumbClick: (kf) => pickKeyframe(kf),
    };
  }

  headChips() {
    const edits = this.edits;
    if (edits === null) return [el("span", { class: "mmpl-chip mmpl-pending", text: "edits JSON unreadable" })];
    const segments = new Set(edits.map((e) => e.segment)).size;
    return segments ? [el("span", { class: "mmpl-chip mmpl-pending", text: `${segments} edited` })] : [];
  }

  segmentEdits(k) {
    return (this.edits ?? []).filter((e) => e.segment === k);
  }

  rowTools(segment) {
    const k = segment.segment, edits = this.edits, mine = this.segmentEdits(k);
    const disabled = edits === null; // unreadable JSON: fix it by hand first
    const lockEdit = mine.filter((e) => e.op === "lock" || e.op === "unlock").at(-1);
    const replaced = mine.some((e) => e.op === "replace");
    const locked = replaced || (lockEdit ? lockEdit.op === "lock" : segment.locked);
    const button = (action, text, title, extra = {}) =>
      el("button", { type: "button", "data-action": action, title, text, disabled, ...extra });
    const tools = el("div", { class: "mmpl-tools" },
      button("lock", locked ? "locked" : "lock", replaced ? "A replaced keyframe locks the segment"
        : "Keep this segment's keyframes when re-planning", {
        "aria-pressed": String(locked), disabled: disabled || replaced || segment.status === "empty",
        onclick: () => this.write(actions.lock(this.edits, k, segment.locked)) }),
      button("reroll", "re-roll", "Plan this segment again with a new seed (and the segments after it)", {
        onclick: () => this.write(actions.reroll(this.edits, k, Math.floor(Math.random() * 2 ** 31))) }),
      button("prompt", "prompt", "Give this segment a new prompt", { onclick: () => { this.prompting = k; this.strip.render(); } }),
      button("reset", "reset", "Drop this segment's edits", { disabled: disabled || !mine.length,
        onclick: () => this.write(actions.reset(this.edits, k)) }));
    if (this.prompting !== k) return tools;
    const current = mine.find((e) => e.op === "prompt")?.text ?? segment.prompt ?? "";
    const input = el("input", { class: "mmpl-prompt-input", type: "text", value: current, placeholder: `prompt of S${k + 1}`,
                                "data-action": "prompt-text" });
    const commit = () => { this.prompting = null; this.write(actions.prompt(this.edits, k, input.value)); };
    input.addEventListener("keydown", (event) => {
      event.stopPropagation();
      if (event.key === "Enter") commit();
      if (event.key === "Escape") { this.prompting = null; this.strip.render(); }
    });
    requestAnimationFrame(() => input.focus());
    return el("div", { class: "mmpl-tools", style: "flex:1 1 100%" }, input,
              button("prompt-ok", "ok", "Use this prompt", { onclick: commit }));
  }

  decorateRow(row, segment) {
    const mine = this.segmentEdits(segment.segment);
    const head = row.querySelector(".mmpl-row-head");
    const tools = head.querySelector(".mmpl-tools");
    const badge = (text, title) => head.insertBefore(el("span", { class: "mmpl-chip mmpl-pending", title, text }), tools);
    for (const edit of mine) {
      if (edit.op === "reroll") badge(`re-roll · seed ${edit.seed}`, "Re-planned with this seed on the next run");
      if (edit.op === "prompt") badge(`prompt: ${edit.text}`, edit.text);
      if (edit.op === "replace") badge(`f${edit.frame} replaced`, `Image ${edit.image}`);
      if (edit.op === "target") badge(`${edit.role ?? `f${edit.frame}`} target`, edit.from ? `Keyframe f${edit.from[1]} of S${edit.from[0] + 1}` : `Image ${edit.image}`);
    }
    if (mine.some((e) => REGENERATE.has(e.op))) row.dataset.pending = "regenerate";
    if (mine.length) row.dataset.edited = "true";
  }

  thumb(kf) {
    const edit = this.segmentEdits(kf.segment).find((e) => e.op === "replace" && e.frame === kf.frame);
    if (!edit) return null;
    if (typeof edit.image !== "string") return { src: "", replaced: true };
    const src = inputImageUrl(edit.image);
    return { src, large: src, replaced: true };
  }

  thumbActions(kf) {
    if (!kf.filename || this.edits === null) return null;
    const upload = el("button", { type: "button", "data-action": "upload", title: "Replace with an image file", text: "upload" });
    const pick = el("button", { type: "button", "data-action": "pick", title: "Replace with a keyframe from any strip", text: "pick" });
    upload.addEventListener("click", () => this.chooseFile(kf.segment, kf.frame));
    pick.addEventListener("click", () => setPicking({ editor: this, segment: kf.segment, frame: kf.frame }));
    return el("div", { class: "mmpl-kf-actions" }, upload, pick);
  }

  chooseFile(segment, frame) {
    const input = el("input", { type: "file", accept: "image/png,image/jpeg,image/webp" });
    input.addEventListener("change", () => {
      const [file] = input.files;
      if (file) this.replaceWith(segment, frame, async () => ({ blob: file, name: `s${segment + 1}_f${frame}_${safeName(file.name)}.png` }));
    });
    input.click();
  }

  /** Fit the image `source()` gives to the video size, upload it and add the replace edit. */
  async replaceWith(segment, frame, source) {
    const { width, height } = this.strip.data.plan;
    this.strip.setMessage(`Uploading the image for S${segment + 1} f${frame}…`, "info");
    try {
      const { blob, name } = await source();
      const image = await uploadImage(await fitToVideo(blob, width, height), name);
      this.strip.setMessage(null);
      this.write(actions.replace(this.edits ?? [], segment, frame, image));
    } catch (err) {
      console.warn("[mmpl] replacing a keyframe failed:", err);
      this.strip.setMessage(`Replacing S${segment + 1} f${frame} failed: ${err.message ?? err}`);
    }
  }
}
