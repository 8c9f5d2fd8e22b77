// Asks the server for the time (a dynamic route beside the static files) and shows it.
// The URL is relative, so the site works wherever it is mounted.
async function showTime() {
  const out = document.getElementById("time");
  try {
    const res = await fetch("api/time");
    const body = await res.json();
    out.textContent = body.utc;
  } catch (err) {
    out.textContent = "unavailable (" + err + ")";
  }
}
document.getElementById("refresh").addEventListener("click", showTime);
showTime();
