// The shared review queue: take a batch, keep it while active, hand it back on leaving.
// Every action is a REST call (POST .../review/batch, /renew, /release, /opinions/{id}/answer).
"use strict";

(() => {
  const bar = document.getElementById("queue");
  if (!bar) return;
  const project = bar.dataset.project;
  const blind = bar.dataset.mode === "second";
  const leaseMs = Number(bar.dataset.leaseSeconds) * 1000;
  const base = `/api/projects/${project}/review`;
  let leaving = true;
  let lastActive = Date.now();

  function showLease(expires, held) {
    const text = document.getElementById("lease");
    if (!expires || !held) { text.textContent = "No batch held: take one."; return; }
    const at = new Date(expires).toLocaleTimeString();
    text.textContent = `${held} images held, yours until ${at} if idle (activity keeps them).`;
  }

  async function nextBatch() {
    try {
      const batch = await winnow.api("POST", `${base}/batch`, { size: 20, second_opinion: blind });
      const n = blind ? batch.blind.length : batch.items.length;
      if (!n) {
        document.querySelectorAll(".tile").forEach((tile) => tile.remove());
        showLease(null, 0);
        winnow.flash(blind ? "No decisions are waiting for your second opinion." : "Nothing left to review: every image is decided or held by someone else.");
        return;
      }
      leaving = false; // the reload shows the new batch: not a leave
      location.reload();
    } catch (error) { winnow.flash(error.message, "error"); }
  }

  async function leave() {
    await winnow.api("POST", `${base}/release`).catch(() => null);
    leaving = false;
    location.href = `/projects/${project}`;
  }

  document.getElementById("next-batch").addEventListener("click", nextBatch);
  document.getElementById("leave-queue").addEventListener("click", leave);
  if (bar.dataset.expires) showLease(bar.dataset.expires, document.querySelectorAll(".tile").length);

  // Active means a key or a click within the lease period: then the lease is renewed,
  // a third of the way through, so an active reviewer never loses the batch.
  for (const type of ["keydown", "pointerdown"]) {
    document.addEventListener(type, () => { lastActive = Date.now(); }, true);
  }
  setInterval(async () => {
    if (Date.now() - lastActive > leaseMs || !document.querySelector(".tile")) return;
    try {
      const lease = await winnow.api("POST", `${base}/renew`);
      showLease(lease.expires_at, lease.held);
    } catch { /* retried on the next tick */ }
  }, Math.max(5000, leaseMs / 3));

  // Leaving the page (another page, a closed tab) hands the batch back at once.
  window.addEventListener("pagehide", () => {
    if (!leaving) return;
    const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
    fetch(`${base}/release`, { method: "POST", keepalive: true, credentials: "same-origin", headers: { "X-CSRF-Token": csrf } });
  });

  document.addEventListener("keydown", (event) => {
    if (event.target.matches("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "b") { event.preventDefault(); nextBatch(); }
  });

  if (!blind) return;
  // Blind answers: a class by its number, or d for "does not belong".
  const grid = document.getElementById("blind");
  const classes = JSON.parse(grid.dataset.classes);
  const tiles = () => [...grid.querySelectorAll(".tile")];
  let current = 0;
  function select(index) {
    const all = tiles();
    if (!all.length) return;
    current = Math.max(0, Math.min(index, all.length - 1));
    all.forEach((t, i) => t.classList.toggle("selected", i === current));
    all[current].focus({ preventScroll: true });
  }
  grid.addEventListener("click", (event) => {
    const tile = event.target.closest(".tile");
    if (tile) select(tiles().indexOf(tile));
  });
  document.addEventListener("keydown", async (event) => {
    if (event.target.matches("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
    const tile = tiles()[current];
    if (event.key === "ArrowRight") { select(current + 1); return; }
    if (event.key === "ArrowLeft") { select(current - 1); return; }
    if (!tile || tile.classList.contains("done")) return;
    let body = null;
    if (event.key === "d") body = { delete: true };
    else if (/^[0-9]$/.test(event.key)) {
      const name = classes[event.key === "0" ? 9 : Number(event.key) - 1];
      if (name !== undefined) body = { label: name };
    }
    if (body === null) return;
    const index = current;
    select(index + 1);
    try {
      await winnow.api("POST", `${base}/opinions/${tile.dataset.opinion}/answer`, body);
      tile.classList.add("done");
      tile.querySelector(".answer").textContent = `your answer: ${body.delete ? "does not belong" : body.label}`;
    } catch (error) {
      winnow.flash(error.message, "error");
      select(index);
    }
  });
  select(0);
})();
