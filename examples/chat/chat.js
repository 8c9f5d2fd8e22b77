// examples/chat/chat.js: the page's side of the chat. Connects to /ws on the server that
// served the page (ws: or wss: to match http: or https:), shows every message from every
// client, and sends what is typed. ?name=ann in the page's address picks a name.
"use strict";

const log = document.getElementById("log");
const form = document.getElementById("form");
const input = document.getElementById("text");
const button = document.getElementById("send");
const status = document.getElementById("status");

function show(msg) {
  const p = document.createElement("p");
  if (msg.kind === "message") {
    const who = document.createElement("span");
    who.className = "name";
    who.textContent = msg.name + ": ";
    p.append(who, document.createTextNode(msg.text)); // text, never HTML
  } else {
    p.className = "event";
    p.textContent = msg.name + (msg.kind === "join" ? " joined" : " left");
  }
  log.append(p);
  log.scrollTop = log.scrollHeight;
}

function connect() {
  const name = new URLSearchParams(location.search).get("name") || "";
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/ws?name=${encodeURIComponent(name)}`);
  ws.onopen = () => {
    status.textContent = "connected";
    input.disabled = button.disabled = false;
    input.focus();
  };
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.kind === "history") msg.messages.forEach(show);
    else show(msg);
  };
  ws.onclose = (ev) => {
    status.textContent = `disconnected (${ev.code}); reconnecting…`;
    input.disabled = button.disabled = true;
    setTimeout(connect, 1000);
  };
  form.onsubmit = (ev) => {
    ev.preventDefault();
    if (input.value.trim() === "" || ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify({ text: input.value }));
    input.value = "";
  };
}

connect();
