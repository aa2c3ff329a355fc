"use strict";

(() => {
  const table = document.getElementById("history");
  if (!table) return;
  const project = table.dataset.project;
  const canEdit = table.dataset.canEdit === "1";
  const body = table.querySelector("tbody");
  let oldest = null;

  function cell(row, text) {
    const td = row.insertCell();
    td.textContent = text;
    return td;
  }

  function describe(e) {
    const label = (e.old_label || "—") === (e.new_label || "—") ? (e.new_label || "—") : `${e.old_label || "—"} → ${e.new_label || "—"}`;
    const state = e.old_state === e.new_state ? e.new_state : `${e.old_state} → ${e.new_state}`;
    return `${e.action}${e.reverts_id ? ` of #${e.reverts_id}` : ""}: ${label}, ${state}`;
  }

  async function load() {
    const events = await winnow.api("GET", `/api/projects/${project}/events?limit=100` + (oldest ? `&before=${oldest}` : ""));
    for (const e of events) {
      const row = body.insertRow();
      cell(row, e.id);
      cell(row, new Date(e.created_at).toLocaleString());
      cell(row, e.user || "system");
      const img = row.insertCell();
      const link = document.createElement("a");
      link.href = `/api/projects/${project}/images/${e.image_id}`;
      link.textContent = `#${e.image_id}`;
      img.append(link);
      cell(row, describe(e));
      cell(row, e.source);
      const actions = row.insertCell();
      if (canEdit) {
        const button = document.createElement("button");
        button.className = "link";
        button.textContent = "undo";
        button.addEventListener("click", async () => {
          try {
            await winnow.api("POST", `/api/projects/${project}/events/${e.id}/undo`);
            location.reload();
          } catch (error) { winnow.flash(error.message, "error"); }
        });
        actions.append(button);
      }
      oldest = e.id;
    }
    document.getElementById("more").hidden = events.length < 100;
  }
  document.getElementById("more").addEventListener("click", load);
  load();
})();
