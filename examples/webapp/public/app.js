// examples/webapp/public/app.js: the login page shows why a login failed; the user's page
// asks /uploads for the list. Names come from the client that uploaded them: they are
// put in the page as text (textContent), never as markup.
"use strict";

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

async function showUploads() {
  const res = await fetch("/uploads", { credentials: "same-origin", headers: { accept: "application/json" } });
  if (res.status === 401) { location.reload(); return; } // the session is gone
  const { user, uploads } = await res.json();
  document.getElementById("who").textContent = user;
  const list = document.getElementById("uploads");
  list.replaceChildren(...uploads.map((u) => {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = `/uploads/${encodeURIComponent(u.id)}`;
    a.textContent = u.name;
    const info = document.createElement("span");
    info.textContent = size(u.bytes);
    li.append(a, info);
    return li;
  }));
  document.getElementById("none").hidden = uploads.length > 0;
  document.body.dataset.loaded = String(uploads.length); // for tests: the list is in
}

if (document.getElementById("login")) {
  if (new URLSearchParams(location.search).get("login") === "failed") {
    document.getElementById("error").hidden = false;
  }
} else if (document.getElementById("uploads")) {
  showUploads().catch((e) => console.error(e));
}
