// dust-agent status page: short polling. Every few seconds the page's <main> is re-fetched
// as an HTML fragment (rendered and escaped by the agent) and swapped in. No inline code, no
// third-party scripts (the Content-Security-Policy allows only this file).
"use strict";
(function () {
  const main = document.getElementById("main");
  if (!main) return;
  const every = Math.max(1, Number(main.dataset.refresh || "2")) * 1000;
  let busy = false;
  async function refresh() {
    if (busy || document.hidden) return;
    // never replace a form someone is filling in (acknowledge / shelve)
    const active = document.activeElement;
    if (active && main.contains(active) && active.tagName !== "A") return;
    busy = true;
    try {
      const r = await fetch(location.pathname + location.search, {
        headers: { "X-Fragment": "1" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (r.ok) {
        const html = await r.text();
        if (html !== main.dataset.last) {
          main.innerHTML = html;
          main.dataset.last = html;
        }
        document.body.classList.remove("stale");
      } else {
        document.body.classList.add("stale");
      }
    } catch (e) {
      document.body.classList.add("stale");
    } finally {
      busy = false;
    }
  }
  setInterval(refresh, every);
})();
