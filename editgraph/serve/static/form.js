// A form generated from a workflow's typed params: numbers within bounds as sliders, seeds with a
// "random" toggle, enums as selects, images and masks through the painter, other files as paths.

const FLOAT_STEPS = 100;

// `painted`: the image param the painter shows (chosen there, so it gets no row here);
// `onImage(param, file)` uploads a chosen file; `fileUrl(value)` gives a thumbnail's src.
export function buildForm(formEl, params, { onImage, fileUrl, painted } = {}) {
  formEl.replaceChildren();
  const readers = {};
  for (const p of params) {
    if (p.widget === "mask") continue; // the painter above the form feeds it
    if (p.name === painted) {
      readers[p.name] = WIDGETS.image(p, el("div"), { onImage, fileUrl });
      continue;
    }
    const label = el("label", { className: "name", htmlFor: `param-${p.name}`, textContent: p.name });
    const field = el("div", { className: "field" });
    readers[p.name] = WIDGETS[p.widget](p, field, { onImage, fileUrl });
    formEl.append(label, field);
    if (p.description) formEl.append(el("div", { className: "hint", textContent: p.description }));
  }
  return readers;
}

// Each widget fills `field` and returns {read(), set(value)}; read() gives undefined to keep the default.
const WIDGETS = {
  slider(p, field) {
    const isInt = p.type === "int";
    const step = isInt ? 1 : niceStep((p.maximum - p.minimum) / FLOAT_STEPS);
    const input = el("input", { type: "range", id: `param-${p.name}`, name: p.name, min: p.minimum, max: p.maximum, step });
    const out = el("output");
    const show = () => { out.textContent = isInt ? input.value : Number(input.value).toFixed(decimals(step)); };
    input.addEventListener("input", show);
    field.append(input, out);
    const set = (v) => { input.value = v ?? p.default ?? p.minimum; show(); };
    set(p.default);
    return { read: () => (isInt ? parseInt(input.value, 10) : parseFloat(input.value)), set };
  },
  number(p, field) {
    const input = el("input", { type: "number", id: `param-${p.name}`, name: p.name, step: p.type === "int" ? 1 : "any" });
    if (p.minimum != null) input.min = p.minimum;
    if (p.maximum != null) input.max = p.maximum;
    field.append(input);
    const set = (v) => { input.value = v ?? p.default ?? ""; };
    set(p.default);
    return { read: () => (input.value === "" ? undefined : p.type === "int" ? parseInt(input.value, 10) : parseFloat(input.value)), set };
  },
  seed(p, field) {
    const input = el("input", { type: "number", className: "seed", id: `param-${p.name}`, name: p.name, step: 1, min: p.minimum ?? 0 });
    const random = el("input", { type: "checkbox", id: `param-${p.name}-random` });
    const rlabel = el("label", { htmlFor: random.id, textContent: "random" });
    random.addEventListener("change", () => { input.disabled = random.checked; });
    field.append(input, random, rlabel);
    const set = (v) => { random.checked = v === "random"; input.disabled = random.checked; input.value = v === "random" ? "" : v ?? p.default ?? 0; };
    set(p.default);
    return { read: () => (random.checked ? "random" : input.value === "" ? undefined : parseInt(input.value, 10)), set };
  },
  select(p, field) {
    const input = el("select", { id: `param-${p.name}`, name: p.name });
    for (const c of p.choices) input.append(el("option", { value: c, textContent: c }));
    field.append(input);
    const set = (v) => { input.value = v ?? p.default ?? p.choices[0]; };
    set(p.default);
    return { read: () => input.value, set };
  },
  checkbox(p, field) {
    const input = el("input", { type: "checkbox", id: `param-${p.name}`, name: p.name });
    field.append(input);
    const set = (v) => { input.checked = Boolean(v ?? p.default); };
    set(p.default);
    return { read: () => input.checked, set };
  },
  text(p, field) {
    const input = el("textarea", { id: `param-${p.name}`, name: p.name, rows: 1 });
    field.append(input);
    const set = (v) => { input.value = v ?? p.default ?? ""; };
    set(p.default);
    return { read: () => input.value, set };
  },
  image(p, field, { onImage, fileUrl }) {
    // An image file: a thumbnail of the current one and a picker that uploads another.
    const thumb = el("img", { className: "thumb", alt: p.name });
    if (p.default && fileUrl) thumb.src = fileUrl(p.default);
    const input = el("input", { type: "file", id: `param-${p.name}`, name: p.name, accept: "image/png,image/jpeg,image/webp" });
    input.addEventListener("change", () => input.files[0] && onImage && onImage(p.name, input.files[0]));
    field.append(thumb, input);
    let value;
    return { read: () => value, set: (v, src) => { value = v; if (src) thumb.src = src; else if (v && fileUrl) thumb.src = fileUrl(v); }, thumb };
  },
  file(p, field) {
    const input = el("input", { type: "text", id: `param-${p.name}`, name: p.name, placeholder: "path inside the library or an allowed folder" });
    field.append(input);
    const set = (v) => { input.value = v ?? p.default ?? ""; };
    set(p.default);
    return { read: () => (input.value === (p.default ?? "") ? undefined : input.value), set };
  },
};

function niceStep(x) {
  const p = 10 ** Math.floor(Math.log10(x));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= x) || x;
}

function decimals(step) {
  const s = String(step);
  return s.includes(".") ? s.split(".")[1].length : 0;
}

export function el(tag, props = {}) {
  return Object.assign(document.createElement(tag), props);
}
