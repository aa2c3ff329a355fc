// The owner's team page: send decisions to a blind second opinion (POST .../review/opinions).
"use strict";

(() => {
  const section = document.getElementById("opinions");
  const form = document.getElementById("ask-opinions");
  if (!section || !form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const top = Number(form.elements.top_relabels.value);
    try {
      const result = await winnow.api("POST", `/api/projects/${section.dataset.project}/review/opinions`, { top_relabels: top });
      winnow.flash(`${result.created} decisions sent for a second opinion.`);
      setTimeout(() => location.reload(), 800);
    } catch (error) { winnow.flash(error.message, "error"); }
  });
})();
