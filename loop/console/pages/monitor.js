// The monitor page: reads /api/experiments/{id} every few seconds and redraws.
const REFRESH_MS = 3000;
const $ = (id) => document.getElementById(id);
let me = { csrf: null, role: null };
let current = null;
let snapshot = null;

const fmt = (v, digits = 3) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + " %");

async function getJson(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error((await r.json().catch(() => ({}))).error || r.statusText);
  return r.json();
}

async function post(url, body) {
  const r = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Prefloop-CSRF": me.csrf || "" },
    body: JSON.stringify(body || {}),
  });
  const answer = await r.json().catch(() => ({}));
  $("message").textContent = r.ok ? `done in ${answer.seconds} s` : `refused: ${answer.error}`;
  $("message").dataset.status = String(r.status);
  if (r.ok) refresh();
  return r;
}

function drawMetrics(verdict) {
  const body = $("metrics").querySelector("tbody");
  body.replaceChildren();
  for (const m of verdict.metrics) {
    const row = document.createElement("tr");
    row.dataset.metric = m.name;
    const cells = [m.name, m.role, fmt(m.value_a), fmt(m.value_b),
      `${fmt(m.difference)} [${fmt(m.ci_low)}, ${fmt(m.ci_high)}]`,
      m.lift === null ? "–" : pct(m.lift), fmt(m.p_value, 4), fmt(m.p_sequential, 4)];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 7) { td.dataset.field = "p_sequential"; td.dataset.value = String(m.p_sequential); }
      if (i === 2) { td.dataset.field = "value_a"; td.dataset.value = String(m.value_a); }
      if (i === 3) { td.dataset.field = "value_b"; td.dataset.value = String(m.value_b); }
      if (m.significant || m.direction) td.style.fontWeight = i >= 4 ? "600" : "";
      row.appendChild(td);
    });
    body.appendChild(row);
  }
}

function drawSplit(s) {
  const body = $("split").querySelector("tbody");
  body.replaceChildren();
  const e = s.routing && s.routing.experiment;
  const arms = (s.verdict && s.verdict.arms) || {};
  const total = Object.values(arms).reduce((n, a) => n + a.users, 0);
  for (const arm of ["A", "B"]) {
    const a = arms[arm];
    const configured = e && e.id === s.experiment_id ? (arm === "B" ? e.split : 100 - e.split) : null;
    const tr = document.createElement("tr");
    tr.dataset.arm = arm;
    tr.innerHTML = `<td>${arm} · ${a ? a.model_version : "–"}</td>` +
      `<td data-field="users">${a ? a.users : 0} users</td>` +
      `<td>observed ${a && total ? (100 * a.users / total).toFixed(1) : "–"} %</td>` +
      `<td>configured ${configured === null ? "–" : configured.toFixed(1) + " %"}</td>`;
    body.appendChild(tr);
  }
  const srm = s.verdict && s.verdict.srm;
  $("srm").className = srm && srm.flagged ? "flag" : "ok";
  $("srm").textContent = srm
    ? (srm.flagged ? `sample-ratio mismatch: p = ${fmt(srm.p_value, 5)}` : `sample ratio ok (p = ${fmt(srm.p_value, 3)})`)
    : (s.verdict ? s.verdict.srm_note : "");
}

function drawLineage(lineage) {
  const box = $("lineage");
  box.replaceChildren();
  for (const v of lineage) {
    const div = document.createElement("div");
    const l = v.lineage || {};
    const gates = v.gates && Object.keys(v.gates).length ? JSON.stringify(v.gates.passed ?? v.gates) : "–";
    div.textContent = `${v.version}: parent ${v.parent || "–"}, ${l.pair_count ?? "?"} pairs` +
      (l.pair_ranges ? ` (${l.pair_ranges.length} ranges)` : "") + `, gates ${gates}`;
    box.appendChild(div);
  }
  if (!lineage.length) box.textContent = "no registry record";
}

async function refresh() {
  if (!current) return;
  try {
    snapshot = await getJson(`/api/experiments/${encodeURIComponent(current)}`);
  } catch (err) {
    $("next").textContent = `not refreshed: ${err.message}`;
    return;
  }
  const v = snapshot.verdict;
  $("decision").textContent = v ? v.decision : "";
  $("next").textContent = snapshot.next || "";
  if (v) drawMetrics(v);
  drawSplit(snapshot);
  drawLineage(snapshot.lineage || []);
  $("charts").src = `/api/experiments/${encodeURIComponent(current)}/charts.svg?t=${snapshot.updated_ms}`;
  $("updated").textContent = `updated ${new Date(snapshot.updated_ms).toLocaleTimeString()}`;
  document.body.dataset.updated = String(snapshot.updated_ms);
}

async function start() {
  me = await getJson("/api/me");
  $("who").textContent = me.name ? `${me.name} (${me.role})` : "read-only";
  $("controls").hidden = me.role !== "operator";
  const list = await getJson("/api/experiments");
  const running = list.routing && list.routing.experiment && list.routing.experiment.id;
  const wanted = new URLSearchParams(location.search).get("experiment") || running || list.experiments[0];
  for (const id of list.experiments) $("experiment").add(new Option(id, id, false, id === wanted));
  current = wanted;
  $("experiment").onchange = (e) => { current = e.target.value; refresh(); };
  $("set-split").onclick = () => post("/api/routing/split", { split: Number($("split-input").value) });
  $("promote").onclick = () => {
    const b = snapshot && snapshot.routing && snapshot.routing.experiment && snapshot.routing.experiment.b;
    post("/api/routing/promote", { version: b });
  };
  $("rollback").onclick = () => post("/api/routing/rollback", {});
  await refresh();
  setInterval(refresh, REFRESH_MS);
}

start();
