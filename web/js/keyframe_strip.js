// The keyframe strip: a plan shown as one row per segment, its keyframes as thumbnails labelled with latent index and
// time, a status per segment (planned / populating / done) and which segments changed. Clicking a keyframe shows it
// large. The data comes from the node's `ui` (nodes/keyframe_ui.py); images are served by ComfyUI's /view.
import { api } from "../../../scripts/api.js";

const THUMB_HEIGHT = 56;
const ROW_HEIGHT = THUMB_HEIGHT + 44; // head line, caption, padding
const WIDGET_MARGINS = 20; // ComfyUI insets a DOM widget by 10 px on each side
const MAX_VISIBLE_ROWS = 6;
const STATUS_TEXT = { empty: "not planned", partial: "partly planned", planned: "planned", populated: "done",
                      populating: "populating", done: "done" };

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export function viewUrl({ filename, subfolder = "", type = "temp" }) {
  const query = new URLSearchParams({ filename, subfolder, type });
  return api.apiURL(`/view?${query}`);
}

export function seconds(time) {
  return `${Number(time.toFixed(2))}s`;
}

let lightbox = null;

export function closeLightbox() {
  lightbox?.remove();
  lightbox = null;
}

/** Show an image large over the page; a click or Escape closes it. */
export function openLightbox(src, caption, { smooth = false } = {}) {
  closeLightbox();
  const img = el("img", { src, alt: caption, class: smooth ? "mmpl-large" : null });
  lightbox = el("div", { class: "mmpl-lightbox", role: "dialog", "aria-label": caption, onclick: closeLightbox },
                el("figure", {}, img, el("figcaption", { text: caption })));
  document.body.append(lightbox);
}

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") closeLightbox();
});

export class KeyframeStrip {
  /** hooks (all optional): changed() (after new data or statuses: e.g. to save them), showChanged (default true:
   *  mark segments the server reports as changed / kept),
   *  headChips() → elements for the head line, rowTools(segment) → element, decorateRow(row, segment),
   *  thumb(kf) → {src, large, replaced} | null, thumbActions(kf) → element, thumbClick(kf) → true when handled. */
  constructor(hooks = {}) {
    this.hooks = hooks;
    this.data = null;
    this.statuses = new Map(); // segment → {status, worker}: live populate progress
    this.message = null;
    this.element = el("div", { class: "mmpl-strip", "data-mmpl-strip": "" });
    this.render();
  }

  get planId() {
    return this.data?.plan?.id ?? null;
  }

  /** Join scores of this plan's video ({joins: [{join, after, seam, seam_block, colour_step, flagged}]}, sent by
   *  Content Populator and Decode Video: nodes/join_ui.py): each row shows the join into it, marked when flagged. */
  setJoins(report) {
    this.joins = new Map((report?.joins ?? []).map((j) => [j.after, j]));
    this.render();
    this.hooks.changed?.();
  }

  joinChip(k) {
    const join = this.joins?.get(k);
    if (!join) return null;
    return el("span", {
      class: `mmpl-chip mmpl-join${join.flagged ? " mmpl-join-flagged" : ""}`, "data-join": join.join,
      "data-flagged": String(join.flagged), text: `${join.flagged ? "⚠ " : ""}join ${join.seam_block.toFixed(1)}× · ΔE ${join.colour_step.toFixed(1)}`,
      title: `join ${join.join}: seam ${join.seam.toFixed(2)} (${join.seam_block.toFixed(2)} against latent boundaries), `
             + `colour step ${join.colour_step.toFixed(2)} ΔE00`,
    });
  }

  /** The `ui` of an executed node: {mmpl_plan: [plan], mmpl_segments: [...], mmpl_keyframes: [...]}.
   *  statuses: live populate statuses to show ({segment: {status, worker}}, from `saved()`); missing: image files
   *  the server no longer has (shown as placeholders instead of broken images); joins: the plan's join scores
   *  (from `saved()`; a new plan drops those of the last one). */
  setOutput(output, { statuses = {}, missing = [], joins = null } = {}) {
    const [plan] = output.mmpl_plan ?? [];
    if (!plan) return;
    if (joins) this.joins = new Map(joins.map((j) => [j.after, j]));
    else if (plan.id !== this.planId) this.joins = null;
    const gone = new Set(missing);
    const keyframes = (output.mmpl_keyframes ?? []).map((kf) =>
      (gone.has(kf.filename) || gone.has(kf.thumb) ? { ...kf, filename: null, thumb: null } : kf));
    this.output = { mmpl_plan: [plan], mmpl_segments: output.mmpl_segments ?? [], mmpl_keyframes: output.mmpl_keyframes ?? [] };
    this.data = { plan, segments: output.mmpl_segments ?? [], keyframes };
    this.statuses = new Map(Object.entries(statuses).map(([k, s]) => [Number(k), s]));
    this.version = (this.version ?? 0) + 1;
    const lost = keyframes.filter((kf) => !kf.filename).length;
    this.message = lost ? { text: `${lost === keyframes.length ? "The" : `${lost} of the`} keyframe images are no longer `
                                  + "on the server (ComfyUI restarted?): run the workflow again to see them.", kind: "info" } : null;
    this.render();
    this.hooks.changed?.();
  }

  /** What `setOutput` needs to show this strip again (after a page reload): JSON, saved with the workflow. */
  saved() {
    if (!this.output) return null;
    return { output: this.output, statuses: Object.fromEntries(this.statuses), joins: [...(this.joins?.values() ?? [])] };
  }

  setStatus(segment, status, worker = "") {
    this.statuses.set(segment, { status, worker });
    const chip = this.element.querySelector(`.mmpl-row[data-segment="${segment}"] .mmpl-status`);
    if (chip) this.fillStatus(chip, segment);
    this.hooks.changed?.();
  }

  setMessage(text, kind = "error") {
    this.message = text ? { text, kind } : null;
    const box = this.element.querySelector(".mmpl-message");
    if (box) this.fillMessage(box);
  }

  thumbSize() {
    const plan = this.data?.plan;
    const aspect = plan ? plan.width / plan.height : 1;
    return { width: Math.round(Math.min(Math.max(THUMB_HEIGHT * aspect, 32), 112)), height: THUMB_HEIGHT };
  }

  /** The widget size that shows every keyframe column and up to MAX_VISIBLE_ROWS rows without scrolling. */
  contentSize() {
    if (!this.data) return { width: 300, height: 46 + WIDGET_MARGINS };
    const { width } = this.thumbSize();
    const { frames, roles } = this.data.plan;
    const groups = roles.filter((role, i) => i === 0 || role !== roles[i - 1]).length;
    const rows = Math.min(Math.max(this.data.segments.length, 1), MAX_VISIBLE_ROWS);
    const scrollbar = this.data.segments.length > MAX_VISIBLE_ROWS ? 14 : 0;
    return { width: 36 + scrollbar + frames.length * (width + 4) + (groups - 1) * 8 + WIDGET_MARGINS,
             height: 52 + rows * ROW_HEIGHT + WIDGET_MARGINS };
  }

  fillStatus(chip, segment) {
    const live = this.statuses.get(segment);
    const base = this.data.segments[segment]?.status ?? "empty";
    const status = live?.status ?? base;
    chip.dataset.status = status;
    chip.textContent = STATUS_TEXT[status] ?? status;
    chip.title = live?.worker ? `${STATUS_TEXT[status]} on ${live.worker}` : "";
    if (live?.worker && status === "populating") chip.textContent += ` · ${live.worker}`;
  }

  fillMessage(box) {
    box.textContent = this.message?.text ?? "";
    box.className = `mmpl-message${this.message?.kind === "info" ? " mmpl-info" : ""}`;
    box.hidden = !this.message;
  }

  render() {
    const box = el("div", { class: "mmpl-message", role: "status" });
    this.fillMessage(box);
    if (!this.data) {
      this.element.replaceChildren(box, el("div", { class: "mmpl-strip-empty", text: "Run the workflow to see the plan's keyframes here." }));
      return;
    }
    const { plan, segments } = this.data;
    const changed = segments.filter((s) => s.changed).length;
    const showChanged = (this.hooks.showChanged ?? true) && segments.some((s) => s.changed !== null);
    const head = el("div", { class: "mmpl-strip-head" },
      el("span", { class: "mmpl-title", text: `${plan.segments} segment${plan.segments === 1 ? "" : "s"}` }),
      el("span", { text: `${plan.frames.length} keyframes · ${plan.width}×${plan.height} · ${plan.fps} fps` }),
      showChanged ? el("span", { class: "mmpl-chip mmpl-changed", text: `${changed} changed` }) : null,
      ...(this.hooks.headChips?.() ?? []),
      plan.approximate ? el("span", { class: "mmpl-chip", title: "No VAE connected: colours are approximated from the latents",
                                      text: "approximate" }) : null);
    const body = el("div", { class: "mmpl-strip-body" }, this.renderRoles(),
                    ...segments.map((segment) => this.renderRow(segment)));
    this.element.replaceChildren(head, box, body);
  }

  groupStart(index) {
    const roles = this.data.plan.roles;
    return index > 0 && roles[index] !== roles[index - 1];
  }

  renderRoles() {
    const { width } = this.thumbSize();
    const { roles } = this.data.plan;
    const cells = [];
    roles.forEach((role, i) => {
      if (i > 0 && role === roles[i - 1]) return;
      const span = roles.slice(i).findIndex((r) => r !== role);
      const count = span === -1 ? roles.length - i : span;
      cells.push(el("div", { class: `mmpl-role${i > 0 ? " mmpl-group-start" : ""}`, text: role,
                             style: `width:${count * width + (count - 1) * 4}px` }));
    });
    return el("div", { class: "mmpl-roles", style: "padding-left:9px" }, ...cells);
  }

  renderRow(segment) {
    const k = segment.segment;
    const changed = (this.hooks.showChanged ?? true) ? segment.changed : null;
    const status = el("span", { class: "mmpl-chip mmpl-status" });
    this.fillStatus(status, k);
    const head = el("div", { class: "mmpl-row-head" },
      el("span", { class: "mmpl-row-title", text: `S${k + 1}` }),
      el("span", { class: "mmpl-seed", text: `seed ${segment.seed}` }),
      status,
      segment.locked ? el("span", { class: "mmpl-chip mmpl-locked", text: "locked" }) : null,
      this.joinChip(k),
      changed === true ? el("span", { class: "mmpl-chip mmpl-changed", text: "changed" }) : null,
      changed === false ? el("span", { class: "mmpl-chip", text: "kept" }) : null,
      segment.prompt ? el("span", { class: "mmpl-seed", title: segment.prompt, text: `“${segment.prompt.slice(0, 40)}”` }) : null,
      this.hooks.rowTools?.(segment) ?? null);
    const byFrame = new Map(this.data.keyframes.filter((kf) => kf.segment === k).map((kf) => [kf.frame, kf]));
    const thumbs = el("div", { class: "mmpl-thumbs" }, ...this.data.plan.frames.map((frame, i) => {
      const kf = byFrame.get(frame) ?? { segment: k, frame, role: this.data.plan.roles[i], time: null };
      return this.renderThumb(kf, this.groupStart(i));
    }));
    const row = el("div", { class: "mmpl-row", "data-segment": k, "data-changed": String(changed === true) }, head, thumbs);
    this.hooks.decorateRow?.(row, segment);
    return row;
  }

  renderThumb(kf, groupStart) {
    const { width, height } = this.thumbSize();
    const shown = this.hooks.thumb?.(kf) ?? (kf.filename ? { src: viewUrl({ ...kf, filename: kf.thumb }) } : null);
    const label = `f${kf.frame}${kf.time === null ? "" : ` · ${seconds(kf.time)}`}`;
    const caption = `Segment ${kf.segment + 1} · latent f${kf.frame} (${kf.role})${kf.time === null ? "" : ` · ${seconds(kf.time)}`}`;
    const picture = shown
      ? el("img", { src: shown.src, alt: caption, loading: "lazy", draggable: "false", style: `height:${height}px` })
      : el("div", { class: "mmpl-kf-missing", style: `height:${height}px`, text: "–" });
    const figure = el("figure", {
      class: `mmpl-kf${groupStart ? " mmpl-group-start" : ""}${shown?.replaced ? " mmpl-replaced" : ""}`,
      style: `width:${width}px`, title: caption, "data-segment": kf.segment, "data-frame": kf.frame,
      "data-role": kf.role, "data-file": kf.filename ?? "",
    }, picture, el("figcaption", { text: shown?.replaced ? `f${kf.frame} · new` : label }),
       this.hooks.thumbActions?.(kf) ?? null);
    figure.addEventListener("click", (event) => {
      if (event.target.closest("button")) return;
      if (this.hooks.thumbClick?.(kf)) return;
      const large = shown?.large ?? (kf.filename ? viewUrl(kf) : null);
      if (large) openLightbox(large, caption, { smooth: this.data.plan.width >= 256 });
    });
    return figure;
  }
}
