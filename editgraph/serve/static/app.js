// The page: pick a workflow, fill its form, paint a mask, run, watch the graph, compare, re-run.
import { ApiError, follow, get, post, postBytes, setToken, withToken } from "./api.js";
import { buildForm, el } from "./form.js";
import { GraphView } from "./graph.js";
import { Painter } from "./mask.js";

const $ = (id) => document.getElementById(id);
const state = {
  workflows: new Map(), // name -> description from /api/workflows
  current: null, // the description shown
  document: null, // a dropped image's workflow when it is not one of the library's
  readers: {},
  photo: null, // {param, ref?, src} the image param's value and what the painter shows
  maskParam: null,
  job: null,
};
const graph = new GraphView($("graph"));
const painter = new Painter({
  img: $("photo"), view: $("mask-view"), size: $("brush-size"), sizeOut: $("brush-size-out"),
  featherToggle: $("feather-preview"), getFeather: () => state.readers.feather?.read(),
});

// --- start-up ---------------------------------------------------------------------------------

async function start() {
  try {
    const health = await get("/api/health");
    $("connection").textContent = `connected · ${health.jobs.queued} queued · ${health.jobs.running} running`;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return askToken();
    return showErrors(e);
  }
  const { workflows } = await get("/api/workflows");
  const select = $("workflow");
  select.replaceChildren();
  for (const w of workflows) {
    state.workflows.set(w.name, w);
    select.append(el("option", { value: w.name, textContent: w.name }));
  }
  const wanted = new URLSearchParams(location.hash.slice(1)).get("workflow");
  select.value = state.workflows.has(wanted) ? wanted : state.workflows.has("inpaint") ? "inpaint" : workflows[0]?.name;
  await choose(select.value);
  refreshHistory();
}

function askToken() {
  $("token-box").hidden = false;
  $("token-form").onsubmit = (e) => {
    e.preventDefault();
    setToken($("token-input").value);
    $("token-box").hidden = true;
    start();
  };
}

// --- choosing a workflow -------------------------------------------------------------------------

async function choose(name, { document = null, params = {} } = {}) {
  state.document = document;
  const desc = document ? await describeDropped(name) : state.workflows.get(name);
  state.current = desc;
  $("description").textContent = desc.description || "";
  history.replaceState(null, "", `${location.search}#workflow=${encodeURIComponent(name)}`);
  graph.draw(desc);
  const imageParam = desc.params.find((p) => p.widget === "image");
  state.readers = buildForm($("params"), desc.params, { onImage: (param, file) => useImage(param, file), fileUrl, painted: imageParam?.name });
  const maskParam = desc.params.find((p) => p.widget === "mask");
  state.maskParam = maskParam || null;
  state.photo = null;
  $("painter").hidden = !imageParam;
  if (imageParam) {
    const given = params[imageParam.name];
    const src = given !== undefined ? fileUrl(given) : fileUrl(imageParam.default);
    state.photo = { param: imageParam.name, ref: given, src };
    const maskGiven = maskParam ? params[maskParam.name] ?? maskParam.default : null;
    await painter.load(src, maskGiven ? fileUrl(maskGiven) : null).catch(showErrors);
    state.readers[imageParam.name].set(given, src);
    $("painter-note").textContent = maskParam ? "Paint where the picture should change (red). The run uses this mask." : "This workflow takes no mask; the photo is its input.";
    for (const tool of $("painter").querySelectorAll(".mask-tool")) tool.hidden = !maskParam;
    $("mask-view").style.display = maskParam ? "" : "none";
  }
  for (const [k, v] of Object.entries(params)) {
    const r = state.readers[k];
    if (r && k !== imageParam?.name) r.set(v);
  }
  if (maskParam && params[maskParam.name]) state.maskRef = params[maskParam.name];
  else state.maskRef = undefined;
}

async function describeDropped(name) {
  // A dropped document that is not in the library: validate and describe it through the server.
  const params = Object.entries(state.document.params || {}).map(([n, spec]) => ({ name: n, ...spec, widget: widgetFor(spec) }));
  const nodes = Object.entries(state.document.nodes).map(([id, n]) => ({ id, type: n.type }));
  const edges = [];
  for (const [id, n] of Object.entries(state.document.nodes)) for (const [inp, ref] of Object.entries(n.inputs || {})) edges.push({ from: ref.split(".")[0], to: id, input: inp });
  return { name, description: state.document.description || "", params, nodes, edges, layers: layersOf(nodes, edges) };
}

function widgetFor(spec) {
  if (spec.type === "enum") return "select";
  if (spec.type === "bool") return "checkbox";
  if (spec.type === "path") return "file";
  if (spec.type === "int" || spec.type === "float") return spec.minimum != null && spec.maximum != null ? "slider" : "number";
  return "text";
}

function layersOf(nodes, edges) {
  const depth = new Map(nodes.map((n) => [n.id, 0]));
  for (let i = 0; i < nodes.length; i++) for (const e of edges) depth.set(e.to, Math.max(depth.get(e.to), depth.get(e.from) + 1));
  const layers = [];
  for (const [id, d] of depth) (layers[d] ||= []).push(id);
  return layers.filter(Boolean);
}

function fileUrl(value) {
  if (!value) return "";
  if (value.startsWith("upload:")) return withToken(`/api/uploads/${encodeURIComponent(value)}`);
  return withToken(`/api/library/${value.split("/").map(encodeURIComponent).join("/")}`);
}

async function useImage(param, file) {
  try {
    const info = await postBytes("/api/uploads", file);
    const src = fileUrl(info.ref);
    state.readers[param].set(info.ref, src);
    if (param !== state.photo?.param) return;
    state.photo = { param, ref: info.ref, src };
    await painter.load(src, null);
    painter.dirty = true; // a new photo needs its own mask, even an empty one
    state.maskRef = undefined;
  } catch (e) { showErrors(e); }
}

// --- running ---------------------------------------------------------------------------------------

async function collectParams() {
  const params = {};
  for (const [name, r] of Object.entries(state.readers)) {
    const v = r.read();
    if (v !== undefined) params[name] = v;
  }
  if (state.maskParam) {
    if (painter.dirty) {
      const info = await postBytes("/api/uploads", await painter.toBlob());
      params[state.maskParam.name] = info.ref;
      state.maskRef = info.ref;
      painter.dirty = false;
    } else if (state.maskRef) params[state.maskParam.name] = state.maskRef;
  }
  return params;
}

async function run(bodyOverride) {
  showErrors(null);
  $("run").disabled = true;
  try {
    const body = bodyOverride || { workflow: state.document || state.current.name, params: await collectParams() };
    const job = await post("/api/jobs", body);
    await watch(job.id, body.params?.[state.photo?.param] ? fileUrl(body.params[state.photo.param]) : state.photo?.src);
  } catch (e) {
    showErrors(e);
  } finally {
    $("run").disabled = false;
    $("cancel").disabled = true;
    refreshHistory();
  }
}

async function watch(jobId, beforeSrc) {
  state.job = jobId;
  graph.reset();
  $("cancel").disabled = false;
  $("preview-box").hidden = true;
  $("job-state").textContent = "queued";
  const end = await follow(jobId, (ev) => {
    graph.apply(ev);
    if (ev.event === "queued") $("job-state").textContent = `queued (position ${ev.position})`;
    else if (ev.event === "started") $("job-state").textContent = ev.attempt > 1 ? `running (attempt ${ev.attempt})` : "running";
    else if (ev.event === "progress") {
      $("job-state").textContent = `${ev.node}: step ${ev.step} of ${ev.total}`;
      if (ev.image) {
        $("preview").src = ev.image;
        $("preview-caption").textContent = `${ev.node} step ${ev.step}/${ev.total} (latent preview)`;
        $("preview-box").hidden = false;
      }
    } else if (ev.event === "cancel_requested") $("job-state").textContent = "cancelling…";
  });
  $("job-state").textContent = end.state;
  document.body.dataset.lastJob = jobId;
  document.body.dataset.lastState = end.state;
  if (end.state === "done" && end.outputs.length) showResult(jobId, end.outputs[0], beforeSrc);
  if (end.state === "failed") showErrors(end.error);
}

function showResult(jobId, output, beforeSrc) {
  $("result").classList.remove("empty");
  $("result-empty").hidden = true;
  const after = $("result-after");
  after.src = withToken(output.url);
  $("result-before").src = beforeSrc || withToken(output.url);
  $("download").href = withToken(`${output.url}?download=1`);
  $("download").setAttribute("download", output.name);
  $("download-workflow").href = withToken(`/api/jobs/${jobId}/workflow`);
  setCompare($("compare-slider").value);
}

function setCompare(v) {
  $("after-clip").style.clipPath = `inset(0 0 0 ${v}%)`;
  $("divider").style.left = `${v}%`;
}

// --- history ---------------------------------------------------------------------------------------

async function refreshHistory() {
  let jobs;
  try { ({ jobs } = await get("/api/jobs?limit=30")); } catch { return; }
  const list = $("history");
  list.replaceChildren();
  for (const j of jobs) {
    const li = el("li", { className: "job" });
    li.dataset.job = j.id;
    const thumb = el("img", { alt: "" });
    if (j.outputs.length) thumb.src = withToken(j.outputs[0].url);
    const when = new Date(j.created * 1000).toLocaleTimeString();
    const paramsText = Object.entries(j.params).map(([k, v]) => `${k}=${String(v).replace(/^.*\/uploads\//, "upload:")}`).join("  ");
    const buttons = el("div", { className: "buttons" });
    const rerun = el("button", { type: "button", textContent: "Re-run" });
    rerun.onclick = () => rerunJob(j);
    const wf = el("a", { className: "button", textContent: "Workflow", href: withToken(`/api/jobs/${j.id}/workflow`) });
    wf.setAttribute("download", `${j.workflow}.json`);
    buttons.append(rerun, wf);
    if (j.outputs.length) {
      const open = el("button", { type: "button", textContent: "Show" });
      open.onclick = () => showResult(j.id, j.outputs[0], null);
      buttons.append(open);
    }
    li.append(thumb, el("span", { textContent: `${j.workflow} · ${when}` }), el("span", { className: `state-${j.state}`, textContent: j.state }),
      el("span", { className: "params-text", textContent: paramsText, title: paramsText }), buttons);
    list.append(li);
  }
}

async function rerunJob(j) {
  // The resolved workflow: every param and drawn seed written in, so it makes the same pixels.
  try {
    const doc = await get(`/api/jobs/${j.id}/workflow`);
    await run({ workflow: doc, params: {} });
  } catch (e) { showErrors(e); }
}

// --- dropping an image editgraph made ----------------------------------------------------------------

function setupDrop() {
  let depth = 0;
  addEventListener("dragenter", (e) => { e.preventDefault(); depth++; $("drop-hint").hidden = false; });
  addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; $("drop-hint").hidden = true; } });
  addEventListener("dragover", (e) => e.preventDefault());
  addEventListener("drop", async (e) => {
    e.preventDefault();
    depth = 0;
    $("drop-hint").hidden = true;
    const file = e.dataTransfer.files[0];
    if (file) await loadFromImage(file);
  });
}

export async function loadFromImage(file) {
  showErrors(null);
  try {
    const info = await postBytes("/api/provenance", file);
    if (info.library) {
      $("workflow").value = info.library;
      await choose(info.library, { params: info.params });
    } else {
      const name = info.document.name || "dropped";
      const option = el("option", { value: `dropped:${name}`, textContent: `${name} (from image)` });
      $("workflow").append(option);
      $("workflow").value = option.value;
      await choose(name, { document: info.document, params: info.params });
    }
    $("job-state").textContent = `loaded the workflow from ${file.name}`;
  } catch (e) { showErrors(e); }
}

// --- errors ------------------------------------------------------------------------------------------

function showErrors(e) {
  const box = $("errors");
  if (!e) { box.hidden = true; box.replaceChildren(); return; }
  box.hidden = false;
  box.replaceChildren(el("div", { textContent: e.issues?.length ? "The workflow cannot run:" : e.message || String(e) }));
  for (const i of e.issues || []) {
    const line = el("div");
    line.append(el("code", { textContent: i.path || "(document)" }), document.createTextNode(`  ${i.message}`));
    box.append(line);
  }
}

// --- wiring ------------------------------------------------------------------------------------------

$("workflow").addEventListener("change", (e) => {
  const v = e.target.value;
  if (!v.startsWith("dropped:")) choose(v);
});
$("run").addEventListener("click", () => run());
$("cancel").addEventListener("click", () => state.job && post(`/api/jobs/${state.job}/cancel`).catch(showErrors));
$("photo-file").addEventListener("change", (e) => e.target.files[0] && state.photo && useImage(state.photo.param, e.target.files[0]));
$("tool-brush").addEventListener("click", () => pickTool("brush"));
$("tool-eraser").addEventListener("click", () => pickTool("eraser"));
$("mask-clear").addEventListener("click", () => painter.clear());
$("compare-slider").addEventListener("input", (e) => setCompare(e.target.value));
$("history-refresh").addEventListener("click", refreshHistory);
$("params").addEventListener("input", (e) => { if (e.target.name === "feather") painter.redraw(); });

function pickTool(tool) {
  painter.setTool(tool);
  for (const t of ["brush", "eraser"]) {
    $(`tool-${t}`).classList.toggle("active", t === tool);
    $(`tool-${t}`).setAttribute("aria-pressed", String(t === tool));
  }
}

setupDrop();
start().then(() => { document.body.dataset.ready = "1"; }, showErrors);
