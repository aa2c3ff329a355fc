// Near-duplicate pairs: delete, relabel or keep one image of a pair (PATCH .../images/{id}).
"use strict";

(() => {
  const root = document.getElementById("pairs");
  if (!root || root.dataset.canEdit !== "1") return;
  const project = root.dataset.project;
  root.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-action]");
    if (!button) return;
    const tile = button.closest(".tile");
    const body = { version: Number(tile.dataset.version), action: button.dataset.action };
    if (button.dataset.label) body.label = button.dataset.label;
    try {
      const image = await winnow.api("PATCH", `/api/projects/${project}/images/${tile.dataset.id}?source=ui`, body);
      tile.dataset.version = image.version;
      tile.className = `tile state-${image.state} done`;
      tile.querySelector(".label").textContent = image.label || "—";
      tile.querySelector(".state").textContent = `#${image.id} · ${image.state}`;
      winnow.flash(`Image ${image.id}: ${body.action}${body.label ? ` as ${body.label}` : ""}. Undo from History.`);
    } catch (error) {
      winnow.flash(error.status === 409 ? `Image ${tile.dataset.id} was changed by someone else meanwhile; reload to see it.` : error.message, "error");
    }
  });
})();
