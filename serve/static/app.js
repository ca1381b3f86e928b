// The search page: plain DOM code, no build step. Talks only to this server's /v1 API.
"use strict";

const $ = (id) => document.getElementById(id);
let queryFiles = [];

function imageUrl(ref) {
  // Remote catalog images load from their own URL in the browser; the server only serves
  // files inside its image roots (it never fetches a URL for anyone).
  if (/^https?:\/\//i.test(ref)) return ref;
  return "/v1/images?ref=" + encodeURIComponent(ref);
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function filterFields(form) {
  const category = $("category").value.trim();
  if (category) form.append("category", category);
  for (const [id, name] of [["min-price", "min_price"], ["max-price", "max_price"],
                            ["currency", "currency"], ["k", "k"]]) {
    const value = $(id).value.trim();
    if (value) form.append(name, value);
  }
  form.append("match", $("match").value);
}

async function postForm(path, form) {
  const response = await fetch(path, { method: "POST", body: form });
  const body = await response.json();
  if (!response.ok) {
    const error = body.error || { message: response.statusText };
    throw new Error(error.message);
  }
  return body;
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) node.append(child);
  return node;
}

function price(hit) { return hit.price.toFixed(2) + " " + hit.currency; }

function renderHits(hits) {
  const grid = $("results");
  grid.replaceChildren();
  for (const hit of hits) {
    const compare = el("button", { type: "button", textContent: "Compare prices" });
    compare.addEventListener("click", () => comparePrices(hit));
    grid.append(el("div", { className: "card" },
      el("img", { src: imageUrl(hit.image_ref), alt: hit.title, loading: "lazy" }),
      el("span", { className: "title catalog", textContent: hit.title }),
      el("span", { className: "category catalog", textContent: hit.category }),
      el("span", { className: "meta" },
        el("span", { className: "price", textContent: price(hit) }),
        el("span", { className: "score", textContent: "score " + hit.score.toFixed(3) })),
      compare));
    grid.lastChild.dataset.productId = hit.product_id;
  }
}

async function search() {
  if (!queryFiles.length) { setStatus("Pick a photo first."); return; }
  const form = new FormData();
  for (const file of queryFiles) form.append("image", file);
  filterFields(form);
  setStatus("Searching…");
  try {
    const started = performance.now();
    const body = await postForm("/v1/search", form);
    renderHits(body.hits);
    setStatus(body.hits.length + " products in " + Math.round(performance.now() - started) + " ms");
  } catch (err) {
    $("results").replaceChildren();
    setStatus("Search failed: " + err.message, true);
  }
}

function why(match, threshold) {
  // The search module's evidence where it gives it (verification: reason, keypoint inliers,
  // colour agreement); the similarity against the threshold always.
  const parts = ["similarity " + match.similarity.toFixed(3) + " ≥ " + threshold];
  if (match.reason) {
    parts.unshift(match.reason);  // it already names the inliers and the colour check
  } else {
    if (match.inliers !== undefined) parts.push(match.inliers + " matching keypoints");
    if (match.colour_agreement !== undefined) {
      parts.push("colour agreement " + match.colour_agreement.toFixed(2));
    }
  }
  return parts.join(" · ");
}

async function comparePrices(hit) {
  const panel = $("compare");
  panel.hidden = false;
  $("compare-title").replaceChildren("Same item as ",
    el("span", { className: "catalog", textContent: hit.title }));
  $("compare-note").textContent = "Loading…";
  $("compare-list").replaceChildren();
  try {
    const response = await fetch("/v1/compare-prices", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ product_id: hit.product_id }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error((body.error || {}).message || response.statusText);
    $("compare-note").replaceChildren(...(body.matches.length
      ? ["Other listings, cheapest first (",
         el("span", { className: "catalog", textContent: hit.product_id }),
         " itself: " + price(hit) + ")"]
      : ["No other listing is similar enough (threshold " + body.threshold + ")."]));
    for (const m of body.matches) {
      $("compare-list").append(el("li", {},
        el("img", { src: imageUrl(m.image_ref), alt: m.title }),
        el("div", {},
          el("div", { className: "price" }, price(m) + " — ",
            el("span", { className: "seller catalog", textContent: m.seller_id })),
          el("div", {}, el("span", { className: "title catalog", textContent: m.title }), " (",
            el("span", { className: "catalog", textContent: m.product_id }), ")"),
          el("div", { className: "why", textContent: why(m, body.threshold) }))));
    }
  } catch (err) {
    $("compare-note").textContent = "Comparison failed: " + err.message;
  }
}

function useFiles(files) {
  queryFiles = Array.from(files).filter((f) => f.type.startsWith("image/") || !f.type);
  $("previews").replaceChildren(...queryFiles.map((f) => el("img", { src: URL.createObjectURL(f), alt: f.name })));
  search();
}

$("file").addEventListener("change", (e) => useFiles(e.target.files));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  useFiles(e.dataTransfer.files);
});
$("filters").addEventListener("submit", (e) => { e.preventDefault(); search(); });
$("match").addEventListener("change", search);
$("compare-close").addEventListener("click", () => { $("compare").hidden = true; });
