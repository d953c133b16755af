// Arca console: the only script (no inline script anywhere; the CSP forbids it). It adds the
// audit trail's live tail; every page works without it.
"use strict";
(function () {
  const live = document.getElementById("live");
  const body = document.getElementById("records-body");
  if (!live || !body) return;
  let after = Number(live.dataset.after || 0);
  let timer = null;
  const cell = (text) => { const td = document.createElement("td"); td.textContent = text; return td; };
  async function poll() {
    const params = new URLSearchParams(new FormData(document.getElementById("audit-filter")));
    params.set("after", String(after));
    try {
      const r = await fetch("/ui/audit/records?" + params.toString(), { credentials: "same-origin" });
      if (r.ok) {
        const records = await r.json();
        for (const rec of records) {
          const tr = document.createElement("tr");
          tr.className = rec.class;
          for (const k of ["seq", "time", "node", "operation", "path", "who", "decision", "outcome", "error"]) tr.appendChild(cell(String(rec[k] ?? "")));
          body.insertBefore(tr, body.firstChild);
          after = Math.max(after, rec.seq);
        }
      }
    } catch (e) { /* the next poll tries again */ }
  }
  // Each poll is an audited request: every 3 s, and for 10 minutes at most per switch-on.
  let stopAt = 0;
  live.addEventListener("change", () => {
    clearInterval(timer);
    if (!live.checked) return;
    stopAt = Date.now() + 10 * 60 * 1000;
    poll();
    timer = setInterval(() => { if (Date.now() > stopAt) { live.checked = false; clearInterval(timer); } else { poll(); } }, 3000);
  });
})();
