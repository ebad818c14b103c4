// lensd dashboard: refresh the live part of a page (the overview) every few seconds, without a
// reload. The server renders the HTML; this only swaps it in. No other script runs on the pages.
"use strict";
(function () {
  const live = document.getElementById("live");
  if (!live || !live.dataset.refresh) return;
  const period = Number(live.dataset.period || 2000);
  let busy = false;
  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const reply = await fetch(live.dataset.refresh, { credentials: "same-origin", cache: "no-store" });
      if (reply.ok) {
        live.innerHTML = await reply.text();
        live.dataset.updated = String(Date.now());
        document.body.classList.remove("stale");
      } else {
        document.body.classList.add("stale");
      }
    } catch (error) {
      document.body.classList.add("stale");  // the server is away; keep trying
    } finally {
      busy = false;
    }
  }
  setInterval(refresh, period);
})();
