// The workflow's graph as SVG: one row per layer (sources at the top), each node coloured by
// its state as the job's events arrive: queued / running (with a step bar) / ran / cached / failed.

const NS = "http://www.w3.org/2000/svg";
const W = 148, H = 46, GX = 14, GY = 26, PAD = 8;
export const STATES = ["queued", "running", "ran", "cached", "failed", "cancelled"];

export class GraphView {
  constructor(container) {
    this.container = container;
    this.nodes = new Map(); // id -> {g, status, bar}
  }

  draw(desc) {
    this.nodes.clear();
    const pos = new Map();
    const widest = Math.max(...desc.layers.map((l) => l.length));
    const width = PAD * 2 + widest * (W + GX) - GX;
    desc.layers.forEach((layer, row) => {
      const x0 = (width - (layer.length * (W + GX) - GX)) / 2; // each row centred
      layer.forEach((id, i) => pos.set(id, { x: x0 + i * (W + GX), y: PAD + row * (H + GY) }));
    });
    const height = PAD * 2 + desc.layers.length * (H + GY) - GY;
    const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": "workflow graph" });
    svg.style.maxWidth = "100%";
    svg.style.height = "auto";
    for (const e of desc.edges) {
      const a = pos.get(e.from), b = pos.get(e.to);
      if (!a || !b) continue;
      const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y, my = (y1 + y2) / 2;
      svg.append(svgEl("path", { class: "edge", d: `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}` }));
    }
    const types = new Map(desc.nodes.map((n) => [n.id, n.type]));
    for (const [id, p] of pos) {
      const g = svgEl("g", { class: "node", "data-node": id, transform: `translate(${p.x},${p.y})` });
      g.append(svgEl("rect", { width: W, height: H, rx: 6 }));
      g.append(text(id, 8, 17, ""));
      g.append(text(types.get(id) || "", 8, 31, "type"));
      const status = text("", 8, 42, "status");
      const bar = svgEl("rect", { class: "bar", x: 0, y: H - 3, width: 0, height: 3 });
      g.append(status, bar);
      svg.append(g);
      this.nodes.set(id, { g, status, bar });
    }
    this.container.replaceChildren(legend(), svg);
  }

  reset() {
    for (const id of this.nodes.keys()) this.set(id, null);
  }

  set(id, state, note = "") {
    const n = this.nodes.get(id);
    if (!n) return;
    for (const s of STATES) n.g.classList.remove(`state-${s}`);
    if (state) n.g.classList.add(`state-${state}`);
    n.g.dataset.state = state || "";
    n.status.textContent = note || state || "";
    if (state !== "running") n.bar.setAttribute("width", 0);
  }

  progress(id, step, total) {
    const n = this.nodes.get(id);
    if (!n) return;
    this.set(id, "running", `step ${step}/${total}`);
    n.bar.setAttribute("width", (W * step) / total);
  }

  // Apply one job event. Returns nothing; the page handles previews and results itself.
  apply(ev) {
    if (ev.event === "planned") ev.nodes.forEach((id) => this.set(id, "queued"));
    else if (ev.event === "node_started") this.set(ev.node, "running");
    else if (ev.event === "progress") this.progress(ev.node, ev.step, ev.total);
    else if (ev.event === "node_finished") this.set(ev.node, ev.status, `${ev.status} ${fmtSeconds(ev.seconds)}`);
    else if (ev.event === "node_failed") this.set(ev.node, ev.error === "cancelled" ? "cancelled" : "failed", ev.error === "cancelled" ? "cancelled" : "failed");
  }

  states() {
    return Object.fromEntries([...this.nodes].map(([id, n]) => [id, n.g.dataset.state || ""]));
  }
}

function fmtSeconds(s) {
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(1)} s`;
}

function legend() {
  const div = document.createElement("div");
  div.className = "legend";
  for (const s of ["queued", "running", "ran", "cached", "failed"]) {
    const span = document.createElement("span");
    span.innerHTML = `<i style="border-color: var(--${s})"></i>${s}`;
    div.append(span);
  }
  return div;
}

function text(content, x, y, cls) {
  const t = svgEl("text", { x, y, class: cls });
  t.textContent = content;
  return t;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}
