// likewise: the page. Plain JavaScript, no library. The address (its #hash) holds the view and
// its query, so a result can be shared and the back button works. Every text that comes from
// the store is put in the page as text (textContent, text nodes), never as HTML.
"use strict";

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#e377c2", "#8c564b",
  "#17becf", "#bcbd22", "#ff7f0e", "#393b79", "#637939", "#843c39"];
const OUTLIER = "#9a9a9a";

// ---- small helpers ------------------------------------------------------------------------

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs, ...children) {
  const e = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "on") for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
    // Styles through the CSSOM: the page's policy refuses style attributes.
    else if (k === "style") for (const decl of String(v).split(";")) {
      const i = decl.indexOf(":");
      if (i > 0) e.style.setProperty(decl.slice(0, i).trim(), decl.slice(i + 1).trim());
    }
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

function status(id, text, isError) {
  const s = document.getElementById(id);
  s.textContent = text || "";
  s.classList.toggle("error", !!isError);
}

/** Calls the API; throws an Error with the server's message. */
async function api(path, options) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}

/** `#view?a=1&b=2` → {view, params}. */
function parseHash() {
  const h = location.hash.replace(/^#/, "");
  const i = h.indexOf("?");
  const view = (i < 0 ? h : h.slice(0, i)) || "search";
  const params = new URLSearchParams(i < 0 ? "" : h.slice(i + 1));
  return { view, params };
}

function href(view, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return "#" + view + (s ? "?" + s : "");
}

const fmt = (x) => (typeof x === "number" ? x.toFixed(3) : "");
const articleLink = (a, passage) =>
  el("a", { href: href("article", { key: a.key, text: passage }) }, a.title || a.key);

// ---- shared words -------------------------------------------------------------------------

const STOP = new Set(("a an and are as at be been but by for from had has have he her his i in " +
  "into is it its of on or our she so than that the their them then there these they this to " +
  "was we were what when which who will with would you said says").split(" "));
const WORD = /[\p{L}\p{N}][\p{L}\p{N}'’-]*/gu;

function wordSet(text) {
  const s = new Set();
  for (const m of (text || "").matchAll(WORD)) {
    const w = m[0].toLowerCase();
    if (!STOP.has(w) && w.length > 1) s.add(w);
  }
  return s;
}

/** `text` as nodes, with the words it shares with `words` in <mark>. */
function marked(text, words, pattern = WORD) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(pattern)) {
    if (words.has(m[0].toLowerCase())) {
      if (m.index > last) out.push(text.slice(last, m.index));
      out.push(el("mark", {}, m[0]));
      last = m.index + m[0].length;
    }
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

/** `text` as nodes, with the words (letters and digits) the server matched in <mark>. */
function markedWords(text, words) {
  return marked(text, words, /[\p{L}\p{N}]+/gu);
}

// ---- views --------------------------------------------------------------------------------

const views = ["search", "article", "compare", "news", "story", "topics", "dupes", "info"];

function show(view) {
  for (const v of views) document.getElementById("view-" + v).hidden = v !== view;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function route() {
  const { view, params } = parseHash();
  const name = views.includes(view) ? view : "search";
  show(name);
  try {
    if (name === "search") await searchView(params);
    else if (name === "article") await articleView(params);
    else if (name === "compare") await compareView(params);
    else if (name === "news") await newsView();
    else if (name === "story") await storyView(params);
    else if (name === "topics") await topicsView(params);
    else if (name === "dupes") await dupesView();
    else if (name === "info") await infoView();
  } catch (e) {
    const target = { search: "search-status", topics: "topics-status", dupes: "dupes-status", news: "news-status" }[name];
    if (target) status(target, e.message, true);
    else clear(document.getElementById(name)).append(el("p", { class: "status error", role: "alert" }, e.message));
  }
}

// Search ------------------------------------------------------------------------------------

const FIELDS = ["text", "level", "mode", "k", "min_score", "source", "since", "until", "path"];

function fillForm(params) {
  const form = document.getElementById("search-form");
  document.getElementById("passage").value = params.get("text") || "";
  form.level.value = params.get("level") || "article";
  form.mode.value = params.get("mode") || "hybrid";
  form.k.value = params.get("k") || "10";
  for (const f of ["min_score", "source", "since", "until", "path"]) form[f].value = params.get(f) || "";
}

async function searchView(params) {
  fillForm(params);
  const results = clear(document.getElementById("results"));
  const text = params.get("text");
  const like = params.get("like");
  if (!text && !like) { status("search-status", ""); return; }
  const req = { level: params.get("level") || "article", k: Number(params.get("k") || 10) };
  if (params.get("mode")) req.mode = params.get("mode");
  if (like) req.like = like; else req.text = text;
  if (params.get("min_score")) req.min_score = Number(params.get("min_score"));
  for (const f of ["source", "since", "until", "path"]) if (params.get(f)) req[f] = params.get(f);
  status("search-status", "Searching…");
  const t0 = performance.now();
  const doc = await api("/api/query", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(req),
  });
  const hits = doc.hits || [];
  const what = like ? `the article ${like}` : "the passage";
  status("search-status", `${hits.length} ${req.level === "paragraph" ? "paragraphs" : "articles"} like ${what} (${Math.round(performance.now() - t0)} ms)`);
  const words = wordSet(text || "");
  for (const h of hits) {
    const meta = [h.date, h.source, h.path || h.id].filter(Boolean).join(" · ");
    const para = h.text
      ? el("blockquote", { class: "evidence" },
          el("span", { class: "meta" }, `¶${h.paragraph}${h.paragraph_score !== undefined ? " · " + fmt(h.paragraph_score) : ""} `),
          h.matched ? markedWords(h.text, new Set(h.matched.map((w) => w.toLowerCase())))
            : words.size ? marked(h.text, words) : h.text)
      : null;
    // Why the hit ranks here: each half's score and rank (hybrid and lexical modes).
    const half = (name, v, digits) => v ? `${name} ${v.score.toFixed(digits)}${v.rank ? " (#" + v.rank + ")" : ""}` : null;
    const why = [half("meaning", h.semantic, 3), half("words", h.lexical, 2)].filter(Boolean).join(" · ");
    results.append(el("li", { class: "hit", "data-key": h.key },
      el("h3", {}, el("span", { class: "score" }, `${h.rank}. ${fmt(h.score)}`), articleLink(h, text)),
      el("div", { class: "meta" }, meta),
      why ? el("div", { class: "meta why", title: "meaning: cosine similarity of the model's vectors; words: BM25 score of the query's words; #: rank by that half alone" }, why) : null,
      para,
      el("div", { class: "actions" },
        el("a", { href: href("search", { like: h.key, level: req.level, k: req.k }) }, "More like this"),
        like ? el("a", { href: href("compare", { a: like, b: h.key }) }, "Compare with the article") : null)));
  }
  if (!hits.length) results.append(el("li", { class: "hit" }, "No results."));
}

function setUpSearchForm() {
  const form = document.getElementById("search-form");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = {};
    for (const f of FIELDS) p[f] = f === "text" ? document.getElementById("passage").value.trim() : form[f].value;
    if (!p.text) { status("search-status", "Give a passage to search for.", true); return; }
    if (p.level === "article") delete p.level;
    if (p.mode === "hybrid") delete p.mode;
    if (p.k === "10") delete p.k;
    location.hash = href("search", p);
  });
  const box = document.getElementById("passage");
  box.addEventListener("dragover", (ev) => { ev.preventDefault(); box.classList.add("dragging"); });
  box.addEventListener("dragleave", () => box.classList.remove("dragging"));
  box.addEventListener("drop", async (ev) => {
    ev.preventDefault();
    box.classList.remove("dragging");
    const file = ev.dataTransfer.files && ev.dataTransfer.files[0];
    if (!file) return;
    if (!/\.(txt|md|markdown)$/i.test(file.name) && !file.type.startsWith("text/")) {
      status("search-status", `${file.name}: only .txt and .md files can be dropped here`, true);
      return;
    }
    if (file.size > 1 << 20) { status("search-status", `${file.name} is over 1 MiB`, true); return; }
    box.value = await file.text();
    status("search-status", `Read ${file.name}; press Search.`);
  });
  box.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) form.requestSubmit();
  });
}

// Article -----------------------------------------------------------------------------------

async function articleView(params) {
  const key = params.get("key");
  const text = params.get("text") || "";
  const root = clear(document.getElementById("article"));
  if (!key) { root.append(el("p", {}, "No article named.")); return; }
  const q = new URLSearchParams();
  if (text) q.set("text", text);
  const doc = await api(`/api/articles/${encodeURIComponent(key)}?${q}`);
  const meta = [doc.date, doc.source, doc.credit, doc.path || doc.id].filter(Boolean).join(" · ");
  root.append(el("h1", {}, doc.title || doc.key), el("p", { class: "meta" }, meta));
  if (doc.url && /^https?:\/\//i.test(doc.url)) {
    root.append(el("p", {}, el("a", { href: doc.url, rel: "noopener noreferrer", target: "_blank" }, doc.url)));
  }
  if (text) root.append(el("p", { class: "meta" }, "Paragraphs shaded by their similarity to the passage searched for."));
  const paras = el("div", { class: "paragraphs" });
  for (const p of doc.paragraphs) {
    const attrs = { "data-paragraph": p.paragraph };
    if (typeof p.score === "number") {
      // Shade from cosine 0.2 (none) to 0.8 (full); the text stays dark on a light background.
      const a = Math.max(0, Math.min(1, (p.score - 0.2) / 0.6)) * 0.45;
      attrs.style = `background: rgba(11, 87, 164, ${a.toFixed(3)})`;
      attrs.title = `similarity ${fmt(p.score)}`;
      attrs["data-score"] = p.score.toFixed(3);
    }
    paras.append(el("p", attrs, el("span", { class: "meta" }, `¶${p.paragraph}${typeof p.score === "number" ? " · " + fmt(p.score) : ""} `), p.text));
  }
  root.append(paras);
  root.append(el("h2", {}, "Nearest articles"));
  const near = el("ol", { class: "results" });
  for (const h of doc.nearest) {
    near.append(el("li", { class: "hit" },
      el("span", { class: "score" }, fmt(h.score)), articleLink(h), " ",
      el("a", { href: href("compare", { a: doc.key, b: h.key }) }, "compare")));
  }
  root.append(near);
  root.append(el("h2", {}, "Duplicates"));
  if (!doc.duplicates.length) root.append(el("p", {}, "No copies or rewrites of this article or its paragraphs."));
  else root.append(dupesTable(doc.duplicates));
}

// Compare -----------------------------------------------------------------------------------

async function compareView(params) {
  const a = params.get("a"), b = params.get("b");
  const root = clear(document.getElementById("compare"));
  if (!a || !b) { root.append(el("p", {}, "Choose two articles (\"compare\" on an article's neighbours or a duplicate pair).")); return; }
  const doc = await api(`/api/compare?${new URLSearchParams({ a, b })}`);
  const shared = doc.matches.filter((m) => m.relation === "shared").length;
  root.append(el("h1", {}, "Compare"),
    el("div", { class: "twocol" },
      el("div", { class: "side" }, el("h2", {}, "A: ", articleLink(doc.a)), el("p", { class: "meta" }, doc.a.path || doc.a.id || "")),
      el("div", { class: "side" }, el("h2", {}, "B: ", articleLink(doc.b)), el("p", { class: "meta" }, doc.b.path || doc.b.id || ""))),
    el("p", {}, `${shared} shared, ${doc.matches.length - shared} paraphrased; ${doc.only_a.length} only in A, ${doc.only_b.length} only in B (what B adds).`),
    el("p", { class: "legend" }, el("span", { class: "shared" }, "shared"), el("span", { class: "paraphrased" }, "paraphrased"), el("span", { class: "only" }, "only on one side")));
  const rows = el("div", { class: "rows", role: "table", "aria-label": "Aligned paragraphs" });
  const cell = (cls, p, side) => el("div", { class: "cell " + cls, role: "cell", "data-side": side },
    p ? [el("span", { class: "meta" }, `${side}¶${p.paragraph} `), p.text] : "");
  const items = [];
  for (const m of doc.matches) items.push({ order: m.a.paragraph, kind: m.relation, a: m.a, b: m.b, score: m.score });
  for (const p of doc.only_a) items.push({ order: p.paragraph, kind: "only_a", a: p });
  items.sort((x, y) => x.order - y.order);
  for (const p of doc.only_b) items.push({ order: Infinity, kind: "only_b", b: p });
  for (const it of items) {
    const cls = it.kind.startsWith("only") ? "only" : it.kind;
    const label = { shared: "shared", paraphrased: "paraphrased", only_a: "only in A", only_b: "only in B" }[it.kind];
    rows.append(el("div", { role: "row", class: "row", style: "display: contents", "data-relation": it.kind },
      cell(it.a ? cls : "", it.a, "A"),
      el("div", { class: "rel", role: "cell" }, label, it.score !== undefined ? el("br") : null, it.score !== undefined ? fmt(it.score) : null),
      cell(it.b ? cls : "", it.b, "B")));
  }
  root.append(rows);
}

// Topics and stories ------------------------------------------------------------------------

let mapCache = null;

async function topicsView(params) {
  const by = params.get("by") || "topic";
  document.getElementById("by").value = by;
  status("topics-status", "Computing the map…");
  // Stories are the store's own, with the ids they keep (the follow step places every article);
  // a store that has none yet (or a damaged book) shows the batch clustering instead. Everything
  // is fetched first, so the map and its list appear together.
  const batch = () => api(`/api/clusters?by=${by}`);
  const [map, stories, topics] = await Promise.all([
    mapCache && mapCache.generation !== undefined ? Promise.resolve(mapCache) : api("/api/map"),
    by === "story" ? api("/api/stories").catch(() => null) : Promise.resolve(null),
    by === "story" ? Promise.resolve(null) : batch(),
  ]);
  mapCache = map;
  // A store no writer has followed yet (a Spark job's only) has articles but no stories.
  const kept = stories && (stories.stories.length || stories.articles_alone || !map.points.length);
  const clusters = kept ? null : topics || await batch();
  drawMap(map);
  if (kept) {
    drawStories(stories, map);
    status("topics-status", `${map.points.length} articles · ${map.method} · ${stories.stories.length} stories of two or more articles, with the ids they keep`);
  } else {
    drawClusters(clusters, map, by);
    status("topics-status", `${map.points.length} articles · ${map.method} · ${clusters.clusters.length} ${by === "story" ? "stories" : "topics"} (${clusters.method}${by === "story" ? ", numbered for this view only" : ""})`);
  }
  mapCache = null; // fetched again next time: the store may have changed
}

function colourOf(id) { return id ? PALETTE[(id - 1) % PALETTE.length] : OUTLIER; }

function drawMap(map) {
  const svg = clear(document.getElementById("map"));
  const pts = map.points;
  if (!pts.length) return;
  const xs = pts.map((p) => p.x), ys = pts.map((p) => p.y);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x) => 15 + ((x - x0) / ((x1 - x0) || 1)) * 570;
  const sy = (y) => 15 + ((y - y0) / ((y1 - y0) || 1)) * 570;
  const r = pts.length > 500 ? 3 : pts.length > 50 ? 5 : 9;
  const tip = document.getElementById("tooltip");
  const few = pts.length <= 200;
  for (const p of pts) {
    const c = el("svg:circle", {
      cx: sx(p.x).toFixed(1), cy: sy(p.y).toFixed(1), r, fill: colourOf(p.cluster),
      "fill-opacity": 0.85, stroke: "#fff", "stroke-width": 0.6,
      "data-key": p.key, "data-cluster": p.cluster, tabindex: few ? 0 : null, role: few ? "link" : null,
      "aria-label": few ? p.title : null,
      on: {
        mouseenter: (ev) => {
          tip.textContent = p.title + (p.date ? ` (${p.date})` : "");
          tip.hidden = false;
          const box = svg.getBoundingClientRect();
          tip.style.left = `${ev.clientX - box.left + 12}px`;
          tip.style.top = `${ev.clientY - box.top + 12}px`;
        },
        mouseleave: () => { tip.hidden = true; },
        click: () => { location.hash = href("article", { key: p.key }); },
        keydown: (ev) => { if (ev.key === "Enter") location.hash = href("article", { key: p.key }); },
      },
    });
    c.append(el("svg:title", {}, p.title));
    svg.append(c);
  }
  document.getElementById("map-caption").textContent =
    "Each dot is an article, coloured by topic; nearby dots are similar articles. Hover for the headline, click to open it.";
}

/** Articles per day of a story (members with dates), as a small bar chart. */
function timeline(members) {
  const days = new Map();
  for (const m of members) if (m.date) { const d = m.date.slice(0, 10); days.set(d, (days.get(d) || 0) + 1); }
  return dayChart(days);
}

/** A bar chart of articles per day (`YYYY-MM-DD` → count). */
function dayChart(days) {
  if (!days.size) return el("p", { class: "meta" }, "No dates.");
  const sorted = [...days.keys()].sort();
  const first = new Date(sorted[0] + "T00:00:00Z"), last = new Date(sorted[sorted.length - 1] + "T00:00:00Z");
  const span = Math.max(1, Math.round((last - first) / 86400000) + 1);
  const max = Math.max(...days.values());
  const w = 300, h = 40, bw = Math.max(2, Math.min(20, w / span));
  const svg = el("svg:svg", { class: "timeline", width: w, height: h + 14, role: "img",
    "aria-label": `Articles per day from ${sorted[0]} to ${sorted[sorted.length - 1]}` });
  for (const [d, n] of days) {
    const x = (Math.round((new Date(d + "T00:00:00Z") - first) / 86400000) / span) * w;
    const bh = (n / max) * h;
    const bar = el("svg:rect", { x: x.toFixed(1), y: (h - bh).toFixed(1), width: bw, height: bh.toFixed(1), fill: "#0b57a4" });
    bar.append(el("svg:title", {}, `${d}: ${n}`));
    svg.append(bar);
  }
  svg.append(el("svg:text", { x: 0, y: h + 12, "font-size": 10, fill: "#333" }, sorted[0]));
  if (sorted.length > 1) svg.append(el("svg:text", { x: w, y: h + 12, "font-size": 10, fill: "#333", "text-anchor": "end" }, sorted[sorted.length - 1]));
  return svg;
}

function drawClusters(doc, map, by) {
  const root = clear(document.getElementById("clusters"));
  const topicOf = new Map(map.points.map((p) => [p.key, p.cluster]));
  for (const c of doc.clusters) {
    const dates = c.dates ? (c.dates.from === c.dates.to ? c.dates.from : `${c.dates.from} … ${c.dates.to}`) : "";
    const colour = by === "topic" ? colourOf(c.id) : colourOf(topicOf.get(c.members[0] && c.members[0].key));
    const list = el("ul", {});
    for (const m of c.members.slice(0, 5)) list.append(el("li", {}, articleLink(m)));
    if (c.members.length > 5) list.append(el("li", { class: "meta" }, `… ${c.members.length - 5} more`));
    root.append(el("div", { class: "cluster", "data-cluster": c.id },
      el("h3", {}, el("span", { class: "swatch", style: `background:${colour}`, "aria-hidden": "true" }), `#${c.id} · ${c.size} articles`),
      el("p", {}, c.label),
      el("p", { class: "meta" }, [c.keywords.join(", "), dates].filter(Boolean).join(" · ")),
      by === "story" ? timeline(c.members) : null,
      list));
  }
  if (doc.outliers && doc.outliers.length) root.append(el("p", { class: "meta" }, `${doc.outliers.length} articles in no cluster.`));
}

/** The store's stories (`/api/stories`): each opens its timeline, by the id it keeps. */
function drawStories(doc, map) {
  const root = clear(document.getElementById("clusters"));
  const topicOf = new Map(map.points.map((p) => [p.key, p.cluster]));
  for (const s of doc.stories) {
    const day = (a) => (a.date ? a.date.slice(0, 10) : "");
    const dates = day(s.first) && day(s.last) ? (day(s.first) === day(s.last) ? day(s.first) : `${day(s.first)} … ${day(s.last)}`) : "";
    root.append(el("div", { class: "cluster", "data-story": s.id },
      el("h3", {}, el("span", { class: "swatch", style: `background:${colourOf(topicOf.get(s.first.key))}`, "aria-hidden": "true" }),
        el("a", { href: href("story", { id: s.id }) }, `Story ${s.id}`), ` · ${s.size} articles`),
      el("p", {}, s.label),
      el("p", { class: "meta" }, [s.keywords.join(", "), dates].filter(Boolean).join(" · ")),
      dayChart(new Map(Object.entries(s.per_day))),
      el("ul", {},
        el("li", {}, "first: ", articleLink(s.first)),
        s.size > 1 ? el("li", {}, "latest: ", articleLink(s.last)) : null)));
  }
  if (doc.articles_alone) root.append(el("p", { class: "meta" }, `${doc.articles_alone} articles in stories of their own.`));
}

// Duplicates --------------------------------------------------------------------------------

function dupesTable(pairs) {
  const wrap = el("div", { class: "wrap" });
  const table = el("table", {},
    el("thead", {}, el("tr", {}, ["tier", "level", "score", "overlap", "A", "B", ""].map((t) => el("th", { scope: "col" }, t)))));
  const body = el("tbody");
  for (const p of pairs) {
    const side = (s) => [articleLink(s), s.paragraph !== undefined ? el("span", { class: "meta" }, ` ¶${s.paragraph}`) : null,
      s.text ? el("div", { class: "meta" }, s.text.length > 160 ? s.text.slice(0, 159) + "…" : s.text) : null];
    body.append(el("tr", { "data-tier": p.tier },
      el("td", {}, p.tier), el("td", {}, p.level), el("td", { class: "num" }, fmt(p.score)),
      el("td", { class: "num" }, p.overlap.toFixed(2)), el("td", {}, side(p.a)), el("td", {}, side(p.b)),
      el("td", {}, el("a", { href: href("compare", { a: p.a.key, b: p.b.key }) }, "Compare"))));
  }
  table.append(body);
  wrap.append(table);
  return wrap;
}

async function dupesView() {
  status("dupes-status", "Finding duplicates…");
  const doc = await api("/api/dupes");
  const root = clear(document.getElementById("dupes"));
  const groups = [["exact", "article"], ["near-copy", "article"], ["rewrite", "article"],
    ["exact", "paragraph"], ["near-copy", "paragraph"], ["rewrite", "paragraph"]];
  for (const [tier, level] of groups) {
    const pairs = doc.pairs.filter((p) => p.tier === tier && p.level === level);
    root.append(el("h2", {}, `${tier} · ${level} pairs (${pairs.length})`));
    if (pairs.length) root.append(dupesTable(pairs));
  }
  status("dupes-status", `${doc.pairs.length} pairs`);
}

// News: what arrives, live; alerts; stories with their stable ids ------------------------------

const storyLink = (id, label) => el("a", { href: href("story", { id }) }, label);

function alertItem(a) {
  return el("li", { class: "alert" },
    el("span", { class: "when" }, (a.time || "").replace("T", " ").slice(0, 19)), " ",
    el("strong", {}, a.search), " ", fmt(a.score), " ",
    el("a", { href: href("article", { key: a.key }) }, a.title || a.key),
    a.story ? [" · ", storyLink(a.story, `story ${a.story}`)] : null,
    a.copies && a.copies.length ? ` · ${a.copies.length} copies` : null,
    a.paragraph ? el("p", { class: "evidence" }, a.paragraph) : null);
}

let stream = null;
/** Listens to the server's event stream once, for as long as the page is open. */
function listen() {
  if (stream || typeof EventSource === "undefined") return;
  stream = new EventSource("/api/alerts/stream");
  const live = () => document.getElementById("live");
  stream.onopen = () => { live().textContent = "(live)"; };
  stream.onerror = () => { live().textContent = "(reconnecting…)"; };
  const arrived = (text, node) => {
    const list = document.getElementById("arrivals");
    list.prepend(el("li", {}, el("span", { class: "when" }, new Date().toISOString().slice(11, 19)), " ", text, node || ""));
    while (list.children.length > 50) list.lastChild.remove();
  };
  stream.addEventListener("commit", (ev) => {
    const c = JSON.parse(ev.data);
    const keys = (c.keys || []).slice(0, 5);
    arrived(`${c.new} new, ${c.changed} changed, ${c.removed} removed from ${c.origin}`,
      keys.length ? el("ul", {}, keys.map((k) => el("li", {}, el("a", { href: href("article", { key: k }) }, k)))) : null);
  });
  stream.addEventListener("generation", (ev) => {
    const g = JSON.parse(ev.data);
    arrived(`store at generation ${g.generation}: ${g.articles} articles`);
  });
  stream.addEventListener("alert", (ev) => {
    document.getElementById("alerts").prepend(alertItem(JSON.parse(ev.data)));
  });
}

async function newsView() {
  listen();
  status("news-status", "Loading stories and alerts…");
  const [saved, log] = await Promise.all([api("/api/alerts"), api("/api/alerts/log")]);
  const alerts = clear(document.getElementById("alerts"));
  for (const a of log.slice(-50).reverse()) alerts.append(alertItem(a));
  if (!log.length) alerts.append(el("li", { class: "muted" }, "No alerts yet."));
  const savedList = clear(document.getElementById("saved"));
  for (const s of saved) {
    savedList.append(el("li", {}, el("strong", {}, s.name), " ",
      s.query.text ? `“${s.query.text}” (${s.query.mode})` : "", s.story ? [" in ", storyLink(s.story, `story ${s.story}`)] : null));
  }
  if (!saved.length) savedList.append(el("li", { class: "muted" }, "None: likewise alerts add NAME \"text\"."));
  const root = clear(document.getElementById("stories"));
  try {
    const doc = await api("/api/stories");
    for (const s of doc.stories) {
      root.append(el("div", { class: "story" },
        el("h3", {}, storyLink(s.id, `Story ${s.id}`), ` · ${s.size} articles · `, s.label),
        el("p", { class: "keywords" }, s.keywords.join(", ")),
        el("p", { class: "muted" }, "first: ", s.first.title, s.first.date ? ` (${s.first.date.slice(0, 10)})` : "",
          s.size > 1 ? [" · latest: ", s.last.title, s.last.date ? ` (${s.last.date.slice(0, 10)})` : ""] : null)));
    }
    status("news-status", `${doc.stories.length} stories of two or more articles; ${doc.articles_alone} articles alone`);
  } catch (e) {
    status("news-status", e.message, true);
  }
}

async function storyView(params) {
  const doc = await api("/api/stories/" + encodeURIComponent(params.get("id") || ""));
  const root = clear(document.getElementById("story"));
  if (doc.asked !== doc.story.id) root.append(el("p", { class: "muted" }, `Story ${doc.asked} was merged into story ${doc.story.id}.`));
  root.append(el("h1", {}, `Story ${doc.story.id}: `, doc.story.label),
    el("p", { class: "keywords" }, doc.story.keywords.join(", ")));
  const list = el("ol", { class: "timeline" });
  for (const e of doc.timeline) {
    list.append(el("li", {},
      el("span", { class: "when" }, e.date ? e.date.slice(0, 10) : "undated"), " ",
      el("a", { href: href("article", { key: e.key }) }, e.title || e.key), e.source ? ` — ${e.source}` : "",
      e.copies && e.copies.length ? el("p", { class: "muted" }, `copies: `, e.copies.map((c) => c.source || c.key).join(", ")) : null,
      e.adds && e.adds.length ? el("ul", { class: "adds" }, e.adds.slice(0, 3).map((p) => el("li", {}, p))) : null));
  }
  root.append(list);
}

// Info --------------------------------------------------------------------------------------

async function infoView() {
  const doc = await api("/api/info");
  const mb = (b) => `${(b / 1048576).toFixed(1)} MiB`;
  const rows = [
    ["store", doc.store], ["articles", doc.articles], ["paragraphs", `${doc.paragraphs} (${doc.chunks} chunks)`],
    ["model", `${doc.model.name} (dim ${doc.model.dim}, ${doc.model.pooling} pooling, max_seq_length ${doc.model.max_seq_length})`],
    ["precision", doc.precision], ["article vectors", doc.article_vectors], ["compact copies", doc.compact || "none"],
    ["on disk", `${mb(doc.bytes_on_disk)} in ${doc.segments} segments`], ["generation", doc.generation],
    ["last commit", doc.committed_unix ? new Date(doc.committed_unix * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "unknown"],
  ];
  const root = clear(document.getElementById("info"));
  root.append(el("h1", {}, "Store"), el("table", {}, el("tbody", {},
    rows.map(([k, v]) => el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, v))))));
}

// ---- start --------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  setUpSearchForm();
  document.getElementById("by").addEventListener("change", (ev) => {
    location.hash = href("topics", { by: ev.target.value === "topic" ? null : ev.target.value });
  });
  route();
});
