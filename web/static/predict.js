// The predict page: images go to the REST predict endpoint of this model (and of a second
// model to compare); each image shows its top classes with their probabilities and the
// Grad-CAM heatmap of the predicted class, as the endpoint returns them.
"use strict";

(() => {
  const card = document.querySelector("section.predict");
  if (!card) return;
  const form = card.querySelector("[data-predict]");
  const out = document.getElementById("predictions");
  const TOP = 5;
  const url = (model) => `/api/projects/${card.dataset.project}/models/${model}/predict?top_k=${TOP}&gradcam=true`;

  async function predict(model, files) {
    const body = new FormData();
    for (const file of files) body.append("files", file);
    return (await winnow.api("POST", url(model), body)).predictions;
  }

  function column(title, prediction) {
    const box = document.createElement("div");
    box.className = "prediction";
    box.appendChild(document.createElement("h3")).textContent = title;
    if (prediction.gradcam) {
      const heat = box.appendChild(document.createElement("img"));
      heat.className = "heatmap";
      heat.src = prediction.gradcam;
      heat.alt = `where model looked for ${prediction.label}`;
      heat.title = `Grad-CAM of ${prediction.label}`;
      const note = box.appendChild(document.createElement("p"));
      note.className = "muted heat-note";
      note.textContent = `where it looked for ${prediction.label}`;
    }
    for (const { label, probability } of prediction.top) {
      const row = box.appendChild(document.createElement("div"));
      row.className = label === prediction.label ? "top class" : "class";
      row.appendChild(document.createElement("span")).textContent = label;
      const meter = row.appendChild(document.createElement("meter"));
      meter.min = 0; meter.max = 1; meter.value = probability;
      row.appendChild(document.createElement("span")).textContent = `${(100 * probability).toFixed(1)}%`;
    }
    return box;
  }

  async function run(files) {
    if (!files.length) return;
    const compare = form.elements.compare.value;
    out.textContent = "Predicting…";
    try {
      const [mine, theirs] = await Promise.all([
        predict(card.dataset.model, files),
        compare ? predict(compare, files) : Promise.resolve(null),
      ]);
      out.textContent = "";
      [...files].forEach((file, i) => {
        const item = out.appendChild(document.createElement("figure"));
        item.className = "predicted";
        const img = item.appendChild(document.createElement("img"));
        img.src = URL.createObjectURL(file);
        img.alt = file.name;
        item.appendChild(document.createElement("figcaption")).textContent = file.name;
        item.appendChild(column(`model ${card.dataset.model}`, mine[i]));
        if (theirs) item.appendChild(column(`model ${compare}`, theirs[i]));
      });
    } catch (error) {
      out.textContent = "";
      winnow.flash(error.message, "error");
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(form.elements.files.files);
  });
  card.addEventListener("dragover", (event) => event.preventDefault());
  card.addEventListener("drop", (event) => {
    event.preventDefault();
    run([...event.dataTransfer.files].filter((f) => f.type.startsWith("image/")));
  });
})();
