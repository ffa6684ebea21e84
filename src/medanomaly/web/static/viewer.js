// medanomaly viewer: the job list and a study page on NiiVue (axial / coronal / sagittal, window
// presets, findings table that jumps to a lesion's slice and draws its contour, mask toggle, opacity).
"use strict";
const WINDOWS = { // [low, high] HU from width/level: lung W1500/L-600, mediastinum W350/L50, bone W2000/L300, brain W80/L40
  lung: [-1350, 150], mediastinum: [-125, 225], bone: [-700, 1300], brain: [0, 80],
};
const $ = (s) => document.querySelector(s);
const state = { nv: null, study: null, result: null, finding: 0, timer: null, view: "multi", kept: 1 };

function token() { return $("#token").value.trim(); }
function auth() { return { Authorization: "Bearer " + token() }; }
async function api(path, opts = {}) {
  const r = await fetch(path, { ...opts, headers: { ...auth(), ...(opts.headers || {}) } });
  if (!r.ok) { let d = ""; try { d = (await r.json()).detail; } catch (e) {} throw new Error(r.status + " " + d); }
  return r.json();
}
function fmt(v, d = 1) { return (v === null || v === undefined || Number.isNaN(v)) ? "-" : Number(v).toFixed(d); }
// HTML-escape for text and attribute values alike (textContent -> innerHTML leaves quotes as they are)
function esc(s) { return (s == null ? "" : String(s)).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`); }

async function refreshJobs() {
  if (!token()) return;
  try {
    const jobs = await api("v1/jobs");
    $("#jobs tbody").innerHTML = jobs.map((j) => `<tr data-id="${esc(j.id)}" data-status="${esc(j.status)}">
      <td>${esc(j.id.slice(0, 12))}</td><td>${esc(j.model)}</td><td class="status">${esc(j.status)}</td>
      <td>${Math.round(100 * j.progress)}%</td><td>${esc(j.created)}</td><td>${esc(j.reason || "")}</td>
      <td>${j.status === "done" ? `<a href="#study=${esc(j.id)}">open</a>` : ""}</td></tr>`).join("");
  } catch (e) { $("#upload-status").textContent = e.message; }
}
async function loadModels() {
  if (!token()) return;
  try {
    state.models = await api("v1/models");
    const chosen = $("#model").value;  // listed again (the token changed): the model chosen stays chosen
    $("#model").innerHTML = state.models.map((m) => `<option value="${esc(m.name)}">${esc(m.name)} (${esc(m.task)})</option>`).join("");
    if (state.models.some((m) => m.name === chosen)) $("#model").value = chosen;
    showModalityFields();
  } catch (e) { $("#upload-status").textContent = e.message; }
}
// A multimodal (fusion) model takes one file field per modality (a DICOM series or one image each; one may be left
// empty: the model flags it missing); every other model one field of files.
function showModalityFields() {
  const model = (state.models || []).find((m) => m.name === $("#model").value);
  const names = model && model.task === "fusion" ? model.modalities || [] : [];
  const key = JSON.stringify([$("#model").value, names]);
  if ($("#modality-files").dataset.key === key) return;  // the models listed again: files already chosen stay
  $("#modality-files").dataset.key = key;
  $("#files").hidden = names.length > 0;
  $("#modality-files").innerHTML = names.map((n) =>
    `<label>${esc(n)} <input type="file" multiple data-modality="${esc(n)}"></label>`).join(" ") + (names.length
    ? ` <label title="modalities on other grids: resampled onto the first's by coordinates (series of one frame of `
      + `reference), or registered onto the first (rigid: two visits, a patient who moved)">grids `
      + `<select id="align"><option value="">as sent (one grid)</option>`
      + `<option value="resample_to_first">resample to the first's</option>`
      + `<option value="register_to_first">register onto the first</option></select></label>` : "");
}
async function upload(ev) {
  ev.preventDefault();
  const data = new FormData();
  const fields = document.querySelectorAll("#modality-files input[data-modality]");
  if (fields.length) { for (const input of fields) for (const f of input.files) data.append(input.dataset.modality, f); }
  else { for (const f of $("#files").files) data.append("files", f); }
  $("#upload-status").textContent = "uploading...";
  const align = fields.length && $("#align").value ? "&" + $("#align").value + "=true" : "";
  try {
    const r = await api("v1/studies?model=" + encodeURIComponent($("#model").value) + align, { method: "POST", body: data });
    $("#upload-status").textContent = "queued " + r.job_id.slice(0, 12);
    $("#upload-status").dataset.job = r.job_id;
  } catch (e) { $("#upload-status").textContent = e.message; }
  refreshJobs();
}

function ensureViewer() {
  if (state.nv) return state.nv;
  const nv = new niivue.Niivue({ backColor: [0, 0, 0, 1], crosshairColor: [0.2, 0.9, 0.2, 0.7], show3Dcrosshair: false,
                                 isColorbar: false, dragAndDropEnabled: false });
  nv.attachToCanvas($("#gl"));
  nv.onLocationChange = () => showSlice();
  state.nv = nv;
  return nv;
}
// The map (an anomaly map, or the explanation of a call with serve --explain) and a finding's mask follow the
// checkbox and the opacity slider; a finding's red contour always shows.
function showOverlays() {
  const nv = state.nv;
  if (!nv) return;
  const opacity = $("#show-mask").checked ? $("#opacity").value / 100 : 0;
  nv.volumes.forEach((v, i) => { if (i > 0 && !v.name.startsWith("contours")) nv.setOpacity(i, opacity); });
}
// The upper half of the map's robust range is drawn (low values would tint the whole image).
async function loadMap(id) {
  const nv = state.nv;
  const map = await niivue.NVImage.loadFromUrl({ url: `v1/studies/${id}/heatmap`, headers: auth(), name: "heatmap.nii.gz",
                                                 colormap: "warm", opacity: 1 });
  map.cal_min = map.robust_min + 0.5 * (map.robust_max - map.robust_min);
  map.cal_max = map.robust_max;
  nv.addVolume(map);
  showOverlays();
}
function showSlice() {
  const nv = state.nv;
  if (!nv || !nv.volumes.length) return;
  const vox = nv.frac2vox(nv.scene.crosshairPos, 0);
  $("#slice-info").dataset.slice = String(Math.round(vox[2]));
  $("#slice-info").textContent = `axial slice ${Math.round(vox[2])} (voxel ${Math.round(vox[0])}, ${Math.round(vox[1])})`;
}
function setView(view) {
  const nv = state.nv;
  if (state.result && state.result.image.shape_zyx[0] > 1) state.view = view;  // a 2D image's axial view is not kept
  const types = { multi: nv.sliceTypeMultiplanar, axial: nv.sliceTypeAxial, coronal: nv.sliceTypeCoronal, sagittal: nv.sliceTypeSagittal };
  nv.setSliceType(types[view]);
}
function setWindow(name) {
  const nv = state.nv, [lo, hi] = WINDOWS[name];
  if (!nv || !nv.volumes.length) return;
  nv.volumes[0].cal_min = lo; nv.volumes[0].cal_max = hi;
  nv.updateGLVolume();
}
async function showFinding(n) {
  const nv = state.nv, f = state.result.findings[n - 1];
  state.finding = n;
  document.querySelectorAll("#findings tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.n === String(n)));
  while (nv.volumes.length > state.kept) nv.removeVolume(nv.volumes[nv.volumes.length - 1]);  // the image and its map stay
  const base = `v1/studies/${state.study}`;
  if (f.mask) {
    for (const [kind, colormap] of [["masks", "warm"], ["contours", "red"]]) {
      const img = await niivue.NVImage.loadFromUrl({ url: `${base}/${kind}/${n}`, headers: auth(), name: kind + ".nii.gz",
                                                     colormap, opacity: 1, cal_min: 0.5, cal_max: 1 });
      nv.addVolume(img);
    }
    showOverlays();
  }
  nv.scene.crosshairPos = nv.mm2frac(f.point_ras_mm);
  nv.drawScene();
  showSlice();
  $("#slice-info").dataset.finding = String(n);
}
function renderResult(res) {
  $("#classification").innerHTML = Object.keys(res.probabilities || {}).length
    ? `<p>decision <b>${esc(res.decision)}</b>: ` + Object.entries(res.probabilities).map(([k, v]) => `${esc(k)} ${fmt(v, 3)}`).join(", ") + "</p>" : "";
  $("#findings tbody").innerHTML = res.findings.map((f) => `<tr class="clickable" data-n="${esc(f.n)}">
    <td>${esc(f.n)}</td><td>${esc(f.label)}</td><td>${fmt(f.score, 2)}</td><td class="volume">${fmt(f.volume_ml, 2)}</td>
    <td class="partial-volume">${fmt(f.partial_volume_ml, 2)}</td>
    <td>${fmt(f.max_diameter_mm, 1)}</td><td>${f.mean_hu != null ? fmt(f.mean_hu, 0) + " HU" : f.mean_intensity != null ? fmt(f.mean_intensity, 0) + " " + esc(f.intensity_unit || "") : "-"}</td><td>${esc(f.slice ?? "-")}</td></tr>`).join("")
    || `<tr><td colspan="8">no findings</td></tr>`;
  document.querySelectorAll("#findings tr.clickable").forEach((tr) => tr.addEventListener("click", () => showFinding(Number(tr.dataset.n))));
  const explanation = res.explanation || {};
  $("#flags").textContent = [...(res.flags || []), ...(explanation.error ? [`no ${explanation.method} map: ${explanation.error}`] : [])].join(", ");
  const map = explanation.method && !explanation.error ? `${explanation.method} map` : "anomaly map";
  $("#mask-kind").textContent = res.heatmap ? (res.findings.length ? `${map} and mask` : map) : "mask";
}
// The DICOM objects of a DICOM upload (SEG, RT Structure Set, SR, a fusion call's Spatial Registration, Parametric
// Map), for a PACS or a DICOM viewer:
// fetched with the token (a plain link cannot send it) and saved as KIND.dcm.
const DICOM_NAMES = { seg: "SEG", rtstruct: "RT Structure Set", sr: "SR", reg: "Registration", parametric_map: "Parametric Map" };
function renderDicomLinks(id, written) {
  const kinds = Object.keys(DICOM_NAMES).filter((k) => k in written);
  $("#dicom-links").innerHTML = kinds.length
    ? "DICOM: " + kinds.map((k) => `<button data-dicom="${esc(k)}">${esc(DICOM_NAMES[k])}</button>`).join("")
    : written.error ? `<span class="note" title="${esc(written.error)}">DICOM: not written</span>` : "";
  document.querySelectorAll("[data-dicom]").forEach((b) => b.addEventListener("click", () => downloadDicom(id, b.dataset.dicom)));
}
async function downloadDicom(id, kind) {
  const r = await fetch(`v1/studies/${id}/dicom/${kind}`, { headers: auth() });
  if (!r.ok) { $("#study-title").textContent = `${DICOM_NAMES[kind]}: ${r.status}`; return; }
  const a = document.createElement("a");
  a.href = URL.createObjectURL(await r.blob());
  a.download = `${kind}.dcm`;
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}
async function openStudy(id) {
  $("#list-view").hidden = true; $("#study-view").hidden = false;
  state.study = id; $("#study-title").textContent = "study " + id.slice(0, 12);
  const res = await api(`v1/studies/${id}/results`);
  state.result = res;
  renderResult(res);
  const blob = new Blob([JSON.stringify(res, null, 2)], { type: "application/json" });
  $("#report").href = URL.createObjectURL(blob);
  renderDicomLinks(id, res.dicom || {});
  const modalities = res.modalities || [];
  $("#modality-pick").hidden = modalities.length < 2;
  $("#modality").innerHTML = modalities.map((m) => `<option value="${esc(m.n)}">${esc(m.name)}</option>`).join("");
  if (!res.image.viewable) return;
  state.finding = null;
  await showImage(id, 0, res.image.unit);
  setView(res.image.shape_zyx[0] === 1 ? "axial" : state.view);
  showSlice();
  document.body.dataset.ready = "1";
}
// The study's image (n 0), or another modality a fusion call was sent (n > 0, on the same grid), with the map and the
// finding shown over it; the cursor stays where it was.
async function showImage(id, n, unit) {
  const nv = ensureViewer(), at = nv.volumes.length ? nv.scene.crosshairPos : null;
  // a CT opens in the lung window and offers the HU presets; any other image (MR, mammogram, X-ray) in NiiVue's own
  // robust range (the lung window made it one flat white); one slice (a 2D image) opens in the axial view
  const hu = unit === "HU";
  $("#windows").hidden = !hu;
  const image = { url: `v1/studies/${id}/image${n ? "?modality=" + n : ""}`, headers: auth(), name: "image.nii.gz", colormap: "gray" };
  if (hu) [image.cal_min, image.cal_max] = WINDOWS.lung;
  await nv.loadVolumes([image]);
  state.kept = 1;
  if (state.result.heatmap) { await loadMap(id); state.kept = 2; }
  if (state.finding) await showFinding(state.finding);
  if (at) { nv.scene.crosshairPos = at; nv.drawScene(); showSlice(); }
  $("#slice-info").dataset.modality = String(n);
}
async function pickModality() {
  const n = Number($("#modality").value), m = state.result.modalities.find((x) => x.n === n);
  document.body.dataset.ready = "";
  await showImage(state.study, n, m.unit);
  document.body.dataset.ready = "1";
}
function route() {
  const m = location.hash.match(/study=([0-9a-f]{32})/);
  document.body.dataset.ready = "";
  if (m) { openStudy(m[1]).catch((e) => { $("#study-title").textContent = e.message; }); return; }
  $("#list-view").hidden = false; $("#study-view").hidden = true;
  loadModels(); refreshJobs();
}
window.addEventListener("DOMContentLoaded", () => {
  $("#token").value = sessionStorage.getItem("medanomaly-token") || "";
  $("#token").addEventListener("change", () => { sessionStorage.setItem("medanomaly-token", token()); route(); });
  $("#upload").addEventListener("submit", upload);
  $("#model").addEventListener("change", showModalityFields);
  $("#modality").addEventListener("change", pickModality);
  document.querySelectorAll("[data-window]").forEach((b) => b.addEventListener("click", () => setWindow(b.dataset.window)));
  document.querySelectorAll("[data-view]").forEach((b) => b.addEventListener("click", () => setView(b.dataset.view)));
  $("#show-mask").addEventListener("change", showOverlays);
  $("#opacity").addEventListener("input", showOverlays);
  window.addEventListener("hashchange", route);
  state.timer = setInterval(() => { if (!$("#list-view").hidden) refreshJobs(); }, 2000);
  route();
});
