// Keyboard-driven review: each key is one REST call; stale versions (another reviewer
// got there first) come back as 409 and the tile shows the other person's change.
"use strict";

(() => {
  const grid = document.getElementById("review");
  if (!grid) return;
  const project = grid.dataset.project;
  const canEdit = grid.dataset.canEdit === "1";
  const classes = JSON.parse(grid.dataset.classes);
  const tiles = () => [...grid.querySelectorAll(".tile")];
  const undoStack = [];
  let current = 0;
  let lastEvent = null;
  // Tiles marked for one bulk action: shift-click marks a range, ctrl-click or x one tile,
  // a every tile of the page, Escape none.
  const marked = () => tiles().filter((t) => t.classList.contains("marked"));
  const mark = (tile, on) => tile.classList.toggle("marked", on);

  function showMarks() {
    const n = marked().length;
    const bar = document.getElementById("marks");
    if (bar) bar.textContent = n ? `${n} marked: a key now acts on all of them (Escape clears)` : "";
    const buttons = document.getElementById("bulk");
    if (buttons) buttons.hidden = !n;
  }

  // The same bulk actions for the mouse: the buttons beside the count of marked tiles.
  document.getElementById("bulk")?.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-bulk]");
    if (!button) return;
    const action = button.dataset.bulk;
    if (action === "clear") { tiles().forEach((t) => mark(t, false)); showMarks(); return; }
    const label = document.querySelector("[data-bulk-label]").value;
    await bulk(action === "relabel" ? { action, label } : { action });
  });

  async function bulk(body) {
    const chosen = marked();
    try {
      const result = await winnow.api("POST", `/api/projects/${project}/images/bulk`, {
        ...body,
        images: chosen.map((t) => ({ id: Number(t.dataset.id), version: Number(t.dataset.version) })),
      });
      for (const image of result.changed) {
        const tile = grid.querySelector(`.tile[data-id="${image.id}"]`);
        if (tile) { render(tile, image); tile.classList.add("done"); mark(tile, false); }
      }
      for (const id of result.conflicts) {
        const tile = grid.querySelector(`.tile[data-id="${id}"]`);
        if (!tile) continue;
        render(tile, await winnow.api("GET", `/api/projects/${project}/images/${id}`));
        tile.classList.add("conflict");
      }
      const conflicts = result.conflicts.length;
      winnow.flash(
        `${result.changed.length} changed` +
          (conflicts ? `; ${conflicts} changed by someone else meanwhile (still marked, shown as now)` : "") +
          ". Undo from History.",
        conflicts ? "error" : "info",
      );
    } catch (error) { winnow.flash(error.message, "error"); }
    showMarks();
  }

  function select(index) {
    const all = tiles();
    if (!all.length) return;
    current = Math.max(0, Math.min(index, all.length - 1));
    all.forEach((t, i) => t.classList.toggle("selected", i === current));
    all[current].focus({ preventScroll: true });
    all[current].scrollIntoView({ block: "nearest" });
  }

  function columns() {
    const all = tiles();
    if (all.length < 2) return 1;
    const top = all[0].offsetTop;
    const n = all.findIndex((t) => t.offsetTop !== top);
    return n === -1 ? all.length : n;
  }

  function render(tile, image) {
    tile.dataset.version = image.version;
    const kept = ["selected", "marked"].filter((c) => tile.classList.contains(c));
    tile.className = [`tile state-${image.state}`, ...kept].join(" ");
    tile.querySelector(".label").textContent = image.label || "—";
    tile.querySelector(".state").textContent = image.state + (image.reject_reason ? `: ${image.reject_reason}` : "");
  }

  async function change(tile, body) {
    const id = tile.dataset.id;
    try {
      const image = await winnow.api("PATCH", `/api/projects/${project}/images/${id}?source=ui`,
        { version: Number(tile.dataset.version), ...body });
      render(tile, image);
      tile.classList.add("done");
      // The event to undo is looked up without holding up the next key; undo waits for it.
      const event = winnow.api("GET", `/api/projects/${project}/events?image_id=${id}&limit=1`)
        .then((events) => (events.length ? events[0].id : null), () => null);
      undoStack.push({ tile, event });
      return true;
    } catch (error) {
      if (error.status === 409 && error.detail && error.detail.image) {
        render(tile, error.detail.image);
        tile.classList.add("conflict");
        winnow.flash(`Image ${id} was changed by someone else meanwhile: now ${error.detail.image.state}, ${error.detail.image.label || "no label"}. Press the key again to apply yours.`, "error");
      } else {
        winnow.flash(error.message, "error");
      }
      return false;
    }
  }

  async function undo() {
    const last = undoStack.pop();
    if (!last) { winnow.flash("Nothing to undo."); return; }
    try {
      const eventId = await last.event;
      if (eventId === null) throw new Error("That change can no longer be found to undo.");
      await winnow.api("POST", `/api/projects/${project}/events/${eventId}/undo`);
      const image = await winnow.api("GET", `/api/projects/${project}/images/${last.tile.dataset.id}`);
      render(last.tile, image);
      last.tile.classList.remove("done");
      winnow.flash("Undone.");
    } catch (error) { winnow.flash(error.message, "error"); }
  }

  // Other reviewers' changes show up within a few seconds; a page in a background tab asks
  // nothing (it catches up with every change since its last one when it is shown again).
  async function poll() {
    if (document.hidden) return;
    try {
      const url = lastEvent === null
        ? `/api/projects/${project}/events?limit=1`
        : `/api/projects/${project}/events?limit=200&after=${lastEvent}`;
      const events = await winnow.api("GET", url);
      if (events.length) {
        const newest = Math.max(...events.map((e) => e.id));
        if (lastEvent !== null) {
          for (const e of events) {
            const tile = grid.querySelector(`.tile[data-id="${e.image_id}"]`);
            if (tile) render(tile, await winnow.api("GET", `/api/projects/${project}/images/${e.image_id}`));
          }
        }
        lastEvent = Math.max(lastEvent || 0, newest);
      } else if (lastEvent === null) {
        lastEvent = 0;
      }
    } catch { /* a missed poll is retried on the next tick */ }
  }
  poll();
  setInterval(poll, 3000);

  grid.addEventListener("click", (event) => {
    const tile = event.target.closest(".tile");
    if (!tile) return;
    const all = tiles();
    const index = all.indexOf(tile);
    if (event.shiftKey) {
      const [from, to] = [Math.min(current, index), Math.max(current, index)];
      all.slice(from, to + 1).forEach((t) => mark(t, true));
    } else if (event.ctrlKey || event.metaKey) {
      mark(tile, !tile.classList.contains("marked"));
    }
    select(index);
    showMarks();
  });

  document.addEventListener("keydown", async (event) => {
    if (event.target.matches("input, select, textarea") || event.ctrlKey && event.key !== "z" || event.metaKey || event.altKey) return;
    const all = tiles();
    const tile = all[current];
    const key = event.key;
    const step = { ArrowRight: 1, l: 1, ArrowLeft: -1, h: -1, ArrowDown: columns(), j: columns(), ArrowUp: -columns() };
    if (key in step) { event.preventDefault(); select(current + step[key]); return; }
    if (key === "Escape") { tiles().forEach((t) => mark(t, false)); showMarks(); return; }
    if (key === "x" && tile) { mark(tile, !tile.classList.contains("marked")); showMarks(); return; }
    if (key === "a") { event.preventDefault(); tiles().forEach((t) => mark(t, true)); showMarks(); return; }
    if (key === "n") { document.getElementById("next-page")?.click(); return; }
    if (key === "p") { document.getElementById("prev-page")?.click(); return; }
    if (key === "o" && tile) {
      const dialog = document.getElementById("large");
      dialog.querySelector("img").src = `/api/projects/${project}/images/${tile.dataset.id}/file?variant=normal`;
      dialog.showModal();
      return;
    }
    if (!canEdit || !tile) return;
    if (key === "u" || (event.ctrlKey && key === "z")) { event.preventDefault(); await undo(); return; }
    let body = null;
    if (key === "d" || key === "Delete") body = { action: "delete" };
    else if (key === "k") body = { action: "keep" };
    else if (key === "r") body = { action: "restore" };
    else if (/^[0-9]$/.test(key)) {
      // 1..9 are the first nine classes, 0 the tenth (as on a keyboard's number row).
      const name = classes[key === "0" ? 9 : Number(key) - 1];
      if (name !== undefined) body = { action: "relabel", label: name };
    }
    if (body === null) return;
    if (marked().length) { await bulk(body); return; }
    // Move on at once, so that the next key acts on the next image however fast it comes;
    // if this change fails, the selection comes back to its tile (unless the reviewer moved).
    const index = current;
    select(index + 1);
    const ok = await change(tile, body);
    if (!ok && current === Math.min(index + 1, tiles().length - 1)) select(index);
  });

  select(0);
})();

// A thumbnail that fails to load is marked, not left as a broken-image icon. Error events do
// not bubble, so listen in the capture phase (no inline handlers: the CSP forbids them).
document.addEventListener(
  "error",
  (event) => {
    if (event.target instanceof HTMLImageElement && event.target.closest(".tile")) {
      event.target.classList.add("missing");
    }
  },
  true,
);
