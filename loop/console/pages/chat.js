// The demo chat: each turn goes to /api/chat (the console forwards it to the router), and
// every answer gets a rating element that the SDK's widget mounts into.
const $ = (id) => document.getElementById(id);
const USER_KEY = "prefloop-chat-user";
let messages = []; // the conversation as the router sees it
let conversation = null;

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "muted";
}

function bubble(role, who, text) {
  $("empty")?.remove();
  const box = document.createElement("div");
  box.className = `msg ${role}`;
  const name = document.createElement("div");
  name.className = "who";
  name.textContent = who;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  box.append(name, body);
  $("messages").appendChild(box);
  box.scrollIntoView({ block: "end" });
  return box;
}

function answered(answer, user) {
  const box = bubble("assistant", answer.model, answer.content);
  box.dataset.responseId = answer.response_id;
  // the widget finds this element (MutationObserver) and rates this very response
  const rating = document.createElement("div");
  rating.dataset.prefloopRating = "";
  rating.dataset.interactionId = answer.interaction_id;
  rating.dataset.responseId = answer.response_id;
  rating.dataset.conversationId = answer.conversation_id;
  rating.dataset.userId = user;
  rating.dataset.sessionId = answer.conversation_id; // the router's session id for the turn
  box.appendChild(rating);
}

function restart() {
  messages = [];
  conversation = null;
  $("conversation").textContent = "";
  $("messages").replaceChildren();
  status("");
}

async function send(event) {
  event.preventDefault();
  const user = $("user").value.trim();
  const text = $("message").value.trim();
  if (!user) {
    status("enter your name first: it decides your arm of the experiment", true);
    $("user").focus();
    return;
  }
  if (!text) return;
  localStorage.setItem(USER_KEY, user);
  const turn = [...messages, { role: "user", content: text }];
  const mine = bubble("user", user, text);
  $("message").value = "";
  $("send").disabled = true;
  status("waiting for the router…");
  try {
    const reply = await fetch("/api/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ messages: turn, user, ...(conversation ? { conversation_id: conversation } : {}) }),
    });
    const answer = await reply.json().catch(() => ({}));
    if (!reply.ok) throw new Error(answer.error || `${reply.status} ${reply.statusText}`);
    messages = [...turn, { role: "assistant", content: answer.content }];
    conversation = answer.conversation_id;
    $("conversation").textContent = conversation;
    answered(answer, user);
    status("");
  } catch (error) {
    mine.classList.add("failed");
    $("message").value = text;
    status(`not sent: ${error.message}`, true);
  } finally {
    $("send").disabled = false;
    $("message").focus();
  }
}

async function loadWidget() {
  const reply = await fetch("/api/chat/config", { cache: "no-store" });
  if (!reply.ok) {
    status(`no ratings: ${(await reply.json().catch(() => ({}))).error || reply.statusText}`, true);
    return;
  }
  const config = await reply.json();
  const script = document.createElement("script");
  script.type = "module";
  script.src = "/sdk/widget.js";
  script.dataset.endpoint = config.collector;
  if (config.token) script.dataset.token = config.token;
  script.onerror = () => status("no ratings: the SDK is not built (cd sdk/js && npm ci && npm run build)", true);
  document.head.appendChild(script);
}

$("user").value = localStorage.getItem(USER_KEY) || "";
$("user").onchange = restart; // a user keeps one arm: another name is another conversation
$("new").onclick = restart;
$("composer").onsubmit = send;
$("message").onkeydown = (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("composer").requestSubmit();
};
loadWidget();
