// The annotation page: takes a task from /api/annotation/next, answers it by button or key.
const KEYS = { "1": "A", "2": "B", "3": "TIE", "4": "BOTH_BAD", " ": "SKIP" };
const AGREEMENT_MS = 5000;
const $ = (id) => document.getElementById(id);
let me = { csrf: null, name: null };
let task = null;
let busy = false;

async function post(url, body) {
  const r = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Prefloop-CSRF": me.csrf || "" },
    body: JSON.stringify(body || {}),
  });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(answer.error || r.statusText);
  return answer;
}

function show(state) {
  task = state.task;
  $("task").hidden = !task;
  $("empty").hidden = !!task;
  document.body.dataset.taskId = task ? task.task_id : "";
  if (task) {
    $("prompt").replaceChildren(...task.prompt.map((m) => {
      const div = document.createElement("div");
      div.className = "prompt";
      const role = document.createElement("div");
      role.className = "role";
      role.textContent = m.role;
      div.append(role, document.createTextNode(m.content));
      return div;
    }));
    $("response-a").textContent = task.response_a;
    $("response-b").textContent = task.response_b;
    $("comment").value = "";
    $("held").textContent = `(held for you ${Math.round(task.held_for_s)} s` +
      (task.overlap > 1 ? `, judged by ${task.overlap} annotators)` : ")");
  } else {
    $("empty").textContent = "No task left for you now: new ones appear as the loop samples them.";
    $("held").textContent = "";
  }
  const p = state.progress;
  $("progress").textContent = `${p.done} done by you · ${p.left_for_me} left for you · ` +
    `${p.complete} of ${p.tasks} tasks complete` + (p.preparing ? ` · ${p.preparing} being prepared` : "");
  $("progress").dataset.done = String(p.done);
  $("progress-bar").max = Math.max(1, p.done + p.left_for_me + (task ? 1 : 0));
  $("progress-bar").value = p.done;
  $("feed").textContent = state.feed === "ready" ? "" : `queue: ${state.feed}`;
}

async function next() {
  try {
    show(await post("/api/annotation/next"));
  } catch (e) {
    $("message").textContent = `could not get a task: ${e.message}`;
  }
}

async function answer(choice) {
  if (!task || busy) return;
  busy = true;
  try {
    const comment = $("comment").value.trim();
    const state = await post("/api/annotation/answer",
      { task_id: task.task_id, choice, comment: comment || null });
    $("message").textContent = `${choice} recorded`;
    show(state);
  } catch (e) {
    $("message").textContent = `not recorded: ${e.message}`;
    await next();
  } finally {
    busy = false;
  }
}

const num = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(3));

async function agreement() {
  const r = await fetch("/api/annotation/agreement", { cache: "no-store" });
  if (!r.ok) return;
  const a = await r.json();
  $("alpha").textContent = num(a.alpha);
  $("agreement-tasks").textContent = `over ${a.tasks} tasks with 2+ opinions`;
  const body = $("kappa").querySelector("tbody");
  body.replaceChildren(...a.pairs.map((p) => {
    const row = document.createElement("tr");
    for (const text of [p.annotators.join(" · "), p.tasks, p.agreed, num(p.kappa)]) {
      const td = document.createElement("td");
      td.textContent = String(text);
      row.append(td);
    }
    return row;
  }));
  $("gate").textContent = a.overlap > 1
    ? `each task goes to ${a.overlap} annotators; it becomes a training pair only when at least ` +
      `${Math.round(a.min_agreement * 100)} % of them pick the same response`
    : "each task goes to one annotator: A or B makes a training pair";
}

document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLTextAreaElement || event.ctrlKey || event.metaKey || event.altKey) return;
  const choice = KEYS[event.key];
  if (choice) {
    event.preventDefault();
    answer(choice);
  }
});
for (const button of document.querySelectorAll("button[data-choice]")) {
  button.addEventListener("click", () => {
    button.blur(); // so that Space skips the next task rather than pressing this button again
    answer(button.dataset.choice);
  });
}

(async () => {
  me = await (await fetch("/api/me", { cache: "no-store" })).json();
  $("who").textContent = me.name ? `${me.name} (${me.role})` : "not signed in";
  if (!me.name) {
    $("empty").hidden = false;
    $("empty").textContent = "Sign in as an annotator to annotate.";
  } else {
    await next();
  }
  await agreement();
  setInterval(agreement, AGREEMENT_MS);
  setInterval(() => { if (!task && me.name) next(); }, AGREEMENT_MS);
})();
