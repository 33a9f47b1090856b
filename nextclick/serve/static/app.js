// The nextclick demo page: one anonymous visitor clicks catalogue items and every served model's
// top-k follows, side by side; a recommendation opens its explanation. Plain JS, no build step,
// nothing fetched from outside the service.
"use strict";

const K = 10; // recommendations per model
const PAGE = 24; // catalogue items per page

const state = {
  sid: "",
  models: [], // from GET /v1/models, the default model first
  clicks: [], // item ids of this visitor, oldest first
  items: new Map(), // String(id) -> item (id, title, category, price)
  lists: new Map(), // model name -> the item ids shown last
  queue: Promise.resolve(), // clicks and new visitors run one after another
  catalogue: { q: "", category: "", offset: 0, token: 0 },
  explainToken: 0,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function showError(err) {
  const box = $("error");
  box.textContent = err instanceof Error ? err.message : String(err);
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

// fetch JSON from the service; a non-2xx answer throws an Error carrying the service's `detail`
async function api(path, { method = "GET", json } = {}) {
  const init = { method, headers: { Accept: "application/json" } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new Error(`${method} ${path}: the service did not answer (${err.message})`);
  }
  if (resp.status === 204) return null;
  const body = await resp.json().catch(() => null);
  if (!resp.ok) {
    const detail = body && body.detail !== undefined ? body.detail : resp.statusText;
    throw new Error(`${method} ${path}: ${resp.status} ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return body;
}

const sessionPath = (suffix = "") => `/v1/sessions/${encodeURIComponent(state.sid)}${suffix}`;

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return "visitor-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// one colour per category name, the same on every page load (FNV-1a hash of the name -> hue)
function categoryColour(name) {
  let h = 0x811c9dc5;
  for (const ch of name) h = Math.imul(h ^ ch.codePointAt(0), 0x01000193);
  return `hsl(${(h >>> 0) % 360}, 70%, 84%)`;
}

const hasCategory = (item) => item.category !== null && item.category !== undefined;

// a style attribute painting `prop` in the item's category colour (none without a category)
const tint = (item, prop) => (hasCategory(item) ? `${prop}:${categoryColour(item.category)}` : null);

function chip(item) {
  if (!hasCategory(item)) return null;
  return el("span", { class: "chip", style: tint(item, "background"), "data-testid": "category-chip", text: item.category });
}

const fmt = (x) => (Math.abs(x) >= 100 ? x.toFixed(1) : x.toPrecision(3));

function itemOf(id) {
  return state.items.get(String(id)) || { id, title: String(id), category: null, price: null };
}

// look up the titles and categories of ids not seen yet (GET /v1/items?ids=...)
async function ensureItems(ids) {
  const missing = [...new Set(ids.map(String))].filter((id) => !state.items.has(id));
  for (let i = 0; i < missing.length; i += 100) {
    const query = new URLSearchParams(missing.slice(i, i + 100).map((id) => ["ids", id]));
    const body = await api(`/v1/items?${query}`);
    for (const item of body.items) state.items.set(String(item.id), item);
  }
}

// ---- catalogue ----

function catalogueCard(item) {
  const price = item.price === null || item.price === undefined ? "" : `${Number(item.price).toFixed(2)}`;
  const attrs = { type: "button", class: "card", "data-testid": "catalogue-item", "data-item": item.id };
  return el("button", { ...attrs, title: `Click ${item.title}`, onclick: () => addClick(item.id) },
    el("span", { class: "title", text: item.title }),
    el("span", { class: "meta" }, chip(item), el("span", { class: "price", text: price })));
}

async function loadCatalogue(append = false) {
  const c = state.catalogue;
  if (!append) c.offset = 0;
  const token = ++c.token;
  const query = new URLSearchParams({ limit: PAGE, offset: c.offset });
  if (c.q) query.set("q", c.q);
  if (c.category) query.set("category", c.category);
  const body = await api(`/v1/items?${query}`);
  if (token !== c.token) return; // a newer search has started
  for (const item of body.items) state.items.set(String(item.id), item);
  const grid = $("catalogue");
  const cards = body.items.map(catalogueCard);
  if (append) grid.append(...cards);
  else grid.replaceChildren(...cards);
  if (!append && !cards.length) grid.append(el("p", { class: "muted", text: "No item matches." }));
  c.offset += body.items.length;
  $("catalogue-count").textContent = `(${body.total})`;
  $("more").hidden = c.offset >= body.total;
  grid.dataset.query = `${c.q}|${c.category}`;
}

// ---- clicks and the models' columns ----

function addClick(id) {
  state.queue = state.queue.then(() => sendClick(id)).catch(showError);
}

async function sendClick(id) {
  const sid = state.sid;
  const body = await api(sessionPath("/clicks"), { method: "POST", json: { item: id, k: K, exclude_seen: true } });
  if (sid !== state.sid) return;
  clearError();
  if (body.unknown_items && body.unknown_items.length) showError(`The models do not know item ${body.unknown_items.join(", ")}.`);
  state.clicks.push(id);
  closeExplanation(); // it explained the session before this click
  renderClicks();
  await refreshModels();
}

function renderClicks() {
  const chips = state.clicks.map((id, i) => {
    const item = itemOf(id);
    return el("li", { class: "click", "data-testid": "click-chip", "data-item": id, style: tint(item, "border-color") },
      el("span", { class: "pos", text: i + 1 }), el("span", { text: item.title }), chip(item));
  });
  if (!chips.length) {
    chips.push(el("li", { class: "muted", text: "No clicks yet: the lists show each model's answer to an empty session." }));
  }
  $("clicks").replaceChildren(...chips);
}

function buildColumns() {
  $("models").replaceChildren(...state.models.map((m) => el("section",
    { class: "model", "data-testid": "model-col", "data-model": m.name, "data-clicks": "" },
    el("h3", {}, el("span", { text: m.name }), el("span", { class: "muted", text: m.model === m.name ? "" : ` ${m.model}` })),
    el("p", { class: "note muted", "data-testid": "model-note" }),
    el("ol", { class: "recs", "data-testid": "rec-list" }))));
}

async function refreshModels() {
  const sid = state.sid;
  const n = state.clicks.length;
  const results = await Promise.all(state.models.map((m) => {
    const query = new URLSearchParams({ model: m.name, k: K, exclude_seen: true });
    return api(sessionPath(`/recommendations?${query}`)).then((r) => ({ m, r }), (err) => ({ m, err }));
  }));
  await ensureItems(results.flatMap(({ r }) => (r ? r.items : [])));
  if (sid !== state.sid) return;
  for (const { m, r, err } of results) renderColumn(m, r, err, n);
}

function movement(prevRank, id, rank) {
  if (!prevRank.size) return el("span", { class: "move" });
  if (!prevRank.has(String(id))) return el("span", { class: "move new", text: "new" });
  const d = prevRank.get(String(id)) - rank;
  return el("span", { class: `move ${d > 0 ? "up" : d < 0 ? "down" : ""}`, text: d > 0 ? `▲${d}` : d < 0 ? `▼${-d}` : "" });
}

function renderColumn(m, r, err, n) {
  const col = document.querySelector(`[data-testid="model-col"][data-model="${CSS.escape(m.name)}"]`);
  const list = col.querySelector("ol");
  col.classList.toggle("failed", Boolean(err));
  if (err) {
    col.querySelector(".note").textContent = err.message;
    list.replaceChildren();
  } else {
    const prevRank = new Map((state.lists.get(m.name) || []).map((id, i) => [String(id), i]));
    const note = r.fallback ? "popularity fallback" : `after ${r.n_clicks} click${r.n_clicks === 1 ? "" : "s"}`;
    col.querySelector(".note").textContent = note;
    list.replaceChildren(...r.items.map((id, i) => {
      const item = itemOf(id);
      const attrs = { type: "button", class: "rec", "data-testid": "rec-item", "data-item": id, "data-score": r.scores[i] };
      return el("li", {}, el("button", { ...attrs, title: `Why ${item.title} for ${m.name}?`, onclick: () => explain(m, id) },
        el("span", { class: "rank", text: i + 1 }), el("span", { class: "title", text: item.title }),
        chip(item), el("span", { class: "score", text: fmt(r.scores[i]) }), movement(prevRank, id, i)));
    }));
    state.lists.set(m.name, r.items);
  }
  col.dataset.clicks = String(n);
}

async function newVisitor() {
  const previous = state.clicks.length ? sessionPath() : null;
  state.sid = randomId();
  state.clicks = [];
  state.lists.clear();
  closeExplanation();
  $("session-id").textContent = state.sid;
  clearError();
  renderClicks();
  if (previous) api(previous, { method: "DELETE" }).catch(showError);
  await refreshModels();
}

// ---- explanations ----

function influenceView(x) {
  const changes = x.influence.map((f) => x.score - f.score_without); // how much each click raises the score
  const max = Math.max(1e-12, ...changes.map(Math.abs));
  return el("div", { class: "part", "data-testid": "influence" },
    el("h4", { text: "Click influence: the score with each click minus the score without it" }),
    x.influence.map((f, i) => {
      const width = (Math.abs(changes[i]) / max) * 50;
      const style = changes[i] >= 0 ? `left:50%;width:${width}%` : `left:${50 - width}%;width:${width}%`;
      const sign = changes[i] >= 0 ? "+" : "";
      return el("div", { class: "infl", "data-testid": "influence-row" },
        el("span", { class: "label", text: `${f.position + 1}. ${itemOf(f.item).title}` }),
        el("span", { class: "track" },
          el("span", { class: `bar ${sign ? "pos" : "neg"}`, style, "data-testid": "influence-bar" })),
        el("span", { class: "value", text: `${sign}${fmt(changes[i])} · rank ${f.rank_without + 1} without` }));
    }));
}

function attentionView(x) {
  const blocks = x.attention.blocks;
  const max = Math.max(1e-12, ...blocks.flat());
  const n = Math.max(0, ...blocks.map((b) => b.length));
  const first = x.clicks.length - n; // the weights cover the last n clicks
  const clicks = x.clicks.slice(first);
  const head = el("tr", {}, el("th", {}),
    clicks.map((id, j) => el("th", { scope: "col", title: itemOf(id).title, text: `${first + j + 1}` })));
  const cell = (w, j) => el("td", {
    class: "cell", "data-testid": "attention-cell", title: `${itemOf(clicks[j]).title}: ${w.toFixed(3)}`, text: w.toFixed(2),
    style: `background:rgba(37,99,235,${(w / max).toFixed(3)});color:${w / max > 0.55 ? "#fff" : "#111"}` });
  const rows = blocks.map((weights, b) => el("tr", {}, el("th", { scope: "row", text: `block ${b + 1}` }), weights.map(cell)));
  return el("div", { class: "part" },
    el("h4", { text: "Attention of the last position over the clicks (columns), per transformer block (rows)" }),
    el("table", { class: "heat", "data-testid": "attention" }, el("thead", {}, head), el("tbody", {}, rows)));
}

function neighboursView(x) {
  const itemTag = (id) => el("span", {
    class: `nb-item${String(id) === String(x.item) ? " target" : ""}`, text: itemOf(id).title,
    style: tint(itemOf(id), "border-color") });
  const about = (nb) => `session ${nb.session} · similarity ${fmt(nb.similarity)} · contribution ${fmt(nb.contribution)}`;
  const row = (nb) => el("li", { "data-testid": "neighbour" },
    el("span", { class: "muted", text: about(nb) }),
    el("span", { class: "nb-items" }, nb.items.map(itemTag)));
  return el("div", { class: "part" }, el("h4", { text: "Neighbour sessions that vote for this item" }),
    el("ol", { class: "neighbours", "data-testid": "neighbours" }, x.neighbours.map(row)));
}

function closeExplanation() {
  state.explainToken++;
  $("explanation").hidden = true;
}

function explanationHeader(m, id, x) {
  const item = itemOf(id);
  return el("header", {},
    el("h3", {}, "Why ", el("q", { text: item.title }), ` for ${m.name}`),
    chip(item),
    x ? el("span", { class: "muted", text: ` rank ${x.rank + 1} of the catalogue, score ${fmt(x.score)}` }) : null,
    x && x.truncated ? el("span", { class: "muted", text: "(the oldest clicks are left out)" }) : null,
    el("span", { class: "actions" },
      el("button", { type: "button", "data-testid": "explain-click", onclick: () => addClick(id), text: "Click this item" }),
      el("button", { type: "button", "data-testid": "explain-close", onclick: closeExplanation, text: "Close" })));
}

async function explain(m, id) {
  const panel = $("explanation");
  const token = ++state.explainToken;
  Object.assign(panel.dataset, { state: "loading", model: m.name, item: String(id) });
  panel.hidden = false;
  panel.replaceChildren(explanationHeader(m, id, null), el("p", { class: "muted", text: "Loading…" }));
  try {
    if (!state.clicks.length) {
      const note = el("p", { class: "muted", text: "No clicks yet: there is nothing to explain." });
      panel.replaceChildren(explanationHeader(m, id, null), note);
      panel.dataset.state = "empty";
      return;
    }
    const x = await api(sessionPath(`/explanations?${new URLSearchParams({ item: id, model: m.name })}`));
    await ensureItems([x.item, ...x.clicks, ...(x.neighbours || []).flatMap((nb) => nb.items)]);
    if (token !== state.explainToken) return;
    const parts = [influenceView(x), x.attention ? attentionView(x) : null, x.neighbours ? neighboursView(x) : null];
    panel.replaceChildren(explanationHeader(m, id, x), ...parts.filter(Boolean));
    panel.dataset.state = "ready";
  } catch (err) {
    if (token !== state.explainToken) return;
    panel.replaceChildren(explanationHeader(m, id, null), el("p", { class: "error", text: err.message }));
    panel.dataset.state = "error";
  }
  panel.scrollIntoView({ block: "nearest" });
}

// ---- start ----

async function init() {
  $("new-visitor").addEventListener("click", () => { state.queue = state.queue.then(newVisitor).catch(showError); });
  let timer = 0;
  $("search").addEventListener("input", (ev) => {
    clearTimeout(timer);
    timer = setTimeout(() => { state.catalogue.q = ev.target.value.trim(); loadCatalogue().catch(showError); }, 200);
  });
  $("category").addEventListener("change", (ev) => {
    state.catalogue.category = ev.target.value;
    loadCatalogue().catch(showError);
  });
  $("more").addEventListener("click", () => loadCatalogue(true).catch(showError));

  const [models, categories] = await Promise.all([api("/v1/models"), api("/v1/categories")]);
  state.models = [...models.models].sort((a, b) => (b.name === models.default) - (a.name === models.default));
  $("category").append(...categories.categories.map((c) => el("option", { value: c.name, text: `${c.name} (${c.n_items})` })));
  buildColumns();
  state.queue = state.queue.then(newVisitor).catch(showError);
  await Promise.all([loadCatalogue(), state.queue]);
  document.body.dataset.state = "ready";
}

init().catch((err) => {
  showError(err);
  document.body.dataset.state = "error";
});
