// The mask painter: brush and eraser over the photo, at the photo's own resolution.
// `paint` holds the mask as alpha (opaque = change); the view tints it red over the photo, blurred by
// the workflow's feather when "feather preview" is on, so the artist sees the soft edge the run uses.

export class Painter {
  constructor({ img, view, size, sizeOut, featherToggle, getFeather }) {
    this.img = img;
    this.view = view;
    this.size = size;
    this.sizeOut = sizeOut;
    this.featherToggle = featherToggle;
    this.getFeather = getFeather;
    this.paint = document.createElement("canvas");
    this.tool = "brush";
    this.dirty = false;
    this.last = null;
    size.addEventListener("input", () => { sizeOut.textContent = size.value; });
    featherToggle.addEventListener("change", () => this.redraw());
    view.addEventListener("pointerdown", (e) => this.down(e));
    view.addEventListener("pointermove", (e) => this.move(e));
    for (const t of ["pointerup", "pointerleave", "pointercancel"]) view.addEventListener(t, () => { this.last = null; });
  }

  // Show a photo; `maskSrc` (optional) starts the mask from an existing black/white file.
  async load(src, maskSrc) {
    await loadInto(this.img, src);
    const w = this.img.naturalWidth, h = this.img.naturalHeight;
    for (const c of [this.paint, this.view]) { c.width = w; c.height = h; }
    this.dirty = false;
    if (maskSrc) {
      const m = new Image();
      await loadInto(m, maskSrc);
      const ctx = this.paint.getContext("2d", { willReadFrequently: true });
      ctx.drawImage(m, 0, 0, w, h);
      const data = ctx.getImageData(0, 0, w, h);
      const px = data.data;
      for (let i = 0; i < px.length; i += 4) { px[i + 3] = px[i]; px[i] = px[i + 1] = px[i + 2] = 255; } // luminance -> alpha
      ctx.putImageData(data, 0, 0);
    }
    this.redraw();
  }

  setTool(tool) { this.tool = tool; }

  clear() {
    this.paint.getContext("2d").clearRect(0, 0, this.paint.width, this.paint.height);
    this.dirty = true;
    this.redraw();
  }

  point(e) {
    const r = this.view.getBoundingClientRect();
    const sx = this.view.width / r.width;
    return { x: (e.clientX - r.left) * sx, y: (e.clientY - r.top) * sx, scale: sx };
  }

  down(e) {
    this.view.setPointerCapture(e.pointerId);
    this.last = this.point(e);
    this.stroke(this.last, this.last);
  }

  move(e) {
    if (!this.last) return;
    const p = this.point(e);
    this.stroke(this.last, p);
    this.last = p;
  }

  stroke(a, b) {
    const ctx = this.paint.getContext("2d");
    ctx.save();
    ctx.globalCompositeOperation = this.tool === "eraser" ? "destination-out" : "source-over";
    ctx.strokeStyle = "#fff";
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.lineWidth = Number(this.size.value) * b.scale; // the size is in screen pixels
    ctx.beginPath();
    ctx.moveTo(a.x, a.y);
    ctx.lineTo(b.x + 0.01, b.y);
    ctx.stroke();
    ctx.restore();
    this.dirty = true;
    this.redraw();
  }

  redraw() {
    const ctx = this.view.getContext("2d");
    ctx.save();
    ctx.clearRect(0, 0, this.view.width, this.view.height);
    const feather = this.featherToggle.checked ? Number(this.getFeather() || 0) : 0;
    ctx.filter = feather > 0 ? `blur(${feather / 2}px)` : "none"; // mask.feather's radius ~ 2 sigma
    ctx.drawImage(this.paint, 0, 0);
    ctx.filter = "none";
    ctx.globalCompositeOperation = "source-in";
    ctx.fillStyle = "rgba(255, 64, 64, 0.55)";
    ctx.fillRect(0, 0, this.view.width, this.view.height);
    ctx.restore();
  }

  // The mask as a PNG the workflow's mask param takes: white = change, black = keep.
  toBlob() {
    const out = document.createElement("canvas");
    out.width = this.paint.width;
    out.height = this.paint.height;
    const ctx = out.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.drawImage(this.paint, 0, 0);
    return new Promise((resolve) => out.toBlob(resolve, "image/png"));
  }
}

function loadInto(img, src) {
  return new Promise((resolve, reject) => {
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`cannot load ${src}`));
    img.src = src;
  });
}
