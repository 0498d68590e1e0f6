"use strict";
// mcts-pref report page. Every piece of data reaches the DOM as a text node (append / textContent):
// step texts are model output and must show literally, never as markup.
(function () {
  const DATA = JSON.parse(document.getElementById("mp-data").textContent);
  const SVG_NS = "http://www.w3.org/2000/svg";

  // ------------------------------------------------------------ small helpers

  function el(tag, cls, ...kids) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    for (const k of kids) {
      if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
    }
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function isNum(x) { return typeof x === "number" && isFinite(x); }
  function num(x, digits) { return isNum(x) ? (Number.isInteger(x) && digits === undefined ? String(x) : x.toFixed(digits === undefined ? 3 : digits)) : "-"; }
  function count(x) { return isNum(x) ? Math.round(x).toLocaleString("en-US") : "-"; }
  function pct(x) { return isNum(x) ? (100 * x).toFixed(1) + "%" : "-"; }
  function pts(x) { return isNum(x) ? (x >= 0 ? "+" : "") + (100 * x).toFixed(1) : "-"; }
  function pval(x) { return isNum(x) ? (x >= 0.001 ? x.toFixed(3) : x.toExponential(1)) : "-"; }
  function stepText(t) { return typeof t === "string" ? t.replace(/\n$/, "") : ""; }

  function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

  // Into view only when out of it, so a page opened at a node that already shows stays at its top.
  function scrollTo(e) {
    if (!e) return;
    const r = e.getBoundingClientRect();
    if (r.top < 0 || r.bottom > window.innerHeight) e.scrollIntoView({ block: "center" });
  }

  function table(headers, rows, cls) {
    const t = el("table", cls || "");
    const tr = el("tr");
    for (const h of headers) tr.append(el("th", null, h));
    t.append(el("thead", null, tr));
    const body = el("tbody");
    for (const r of rows) {
      const row = el("tr");
      r.forEach((c, i) => row.append(el("td", i === 0 ? "name" : "numeric", c)));
      body.append(row);
    }
    t.append(body);
    return t;
  }

  // ------------------------------------------------------------ run view

  function accuracyChart(rows) {
    const pts_ = rows.filter((r) => isNum(r.accuracy));
    const W = 640, H = 260, L = 48, R = 16, T = 16, B = 44;
    const hi = Math.max(0.1, ...pts_.map((r) => (r.ci95 ? r.ci95[1] : r.accuracy)));
    const top = Math.min(1, Math.ceil((hi + 0.05) * 10) / 10);
    const y = (v) => T + (H - T - B) * (1 - v / top);
    const step = (W - L - R) / Math.max(1, pts_.length);
    const x = (i) => L + step * (i + 0.5);
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", class: "chart" });
    s.append(svg("title", {}, "held-out accuracy per stage with its 95% confidence interval"));
    const tick = top > 0.5 ? 0.2 : 0.1;
    for (let v = 0; v <= top + 1e-9; v += tick) {
      s.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
      s.append(svg("text", { x: L - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, Math.round(100 * v) + "%"));
    }
    pts_.forEach((r, i) => {
      const g = svg("g", { class: "point" });
      const ci = r.ci95 || [r.accuracy, r.accuracy];
      g.append(svg("title", {}, `${r.name}: ${pct(r.accuracy)} (95% CI ${pct(ci[0])} to ${pct(ci[1])}, n = ${r.n ?? "-"})`));
      g.append(svg("line", { x1: x(i), x2: x(i), y1: y(ci[0]), y2: y(ci[1]), class: "ci" }));
      for (const v of ci) g.append(svg("line", { x1: x(i) - 6, x2: x(i) + 6, y1: y(v), y2: y(v), class: "ci" }));
      g.append(svg("circle", { cx: x(i), cy: y(r.accuracy), r: 4.5, class: "dot" }));
      g.append(svg("text", { x: x(i) + 9, y: y(r.accuracy) + 4, class: "value" }, pct(r.accuracy)));
      g.append(svg("text", { x: x(i), y: H - B + 18, class: "label", "text-anchor": "middle" }, r.name));
      s.append(g);
    });
    s.append(svg("text", { x: L, y: H - 6, class: "tick" }, "points: accuracy of the first sample per test problem; bars: 95% CI"));
    return s;
  }

  function dataTokens(r) { return (r.search_tokens || 0) + (r.data_sample_tokens || 0) + (r.curriculum_tokens || 0); }

  function renderRunView(root) {
    const rows = DATA.rows;
    if (!rows || !rows.length) return;
    root.hidden = false;
    root.append(el("h2", null, "Held-out accuracy per stage (95% CI)"), accuracyChart(rows));
    root.append(el("h2", null, "Compute per stage"));
    root.append(table(
      ["stage", "trees (right)", "pairs", "search tokens", "other data tokens", "search s", "train s", "train steps", "eval tokens"],
      rows.map((r) => [r.name, r.trees ? `${r.trees} (${r.trees_correct})` : "-", r.pairs ?? "-", r.search_tokens ? count(r.search_tokens) : "-",
        dataTokens(r) - (r.search_tokens || 0) ? count(dataTokens(r) - (r.search_tokens || 0)) : "-",
        isNum(r.search_s) ? num(r.search_s, 1) : "-", r.train_s ? num(r.train_s, 1) : "-", r.train_steps || "-",
        r.sample_tokens ? count(r.sample_tokens) : "-"])));
    root.append(el("p", "caption", "other data tokens: sampling a curriculum pool or a baseline's training data; " +
      "search s: each tree's share of the driver rounds it was in flight for; train s: summed optimizer-step seconds."));
    if (DATA.rounds.length) {
      root.append(el("h2", null, "Search per round"));
      root.append(table(["round", "trees", "committed right", "trees with pairs", "pairs", "nodes per tree", "search tokens"],
        DATA.rounds.map((r) => {
          const s = r.summary;
          return [r.name, s.trees, `${s.correct} (${pct(s.trees ? s.correct / s.trees : null)})`, s.trees_with_pairs, s.pairs,
            num(s.mean_nodes, 1), count(s.tokens)];
        })));
    }
    const tests = rows.filter((r) => r.vs_round0);
    if (tests.length) {
      root.append(el("h2", null, "Paired tests against round-0 (same test problems)"));
      root.append(table(["stage", "n", "round-0 acc", "stage acc", "diff (pts)", "95% CI (pts)", "fixed", "broken", "p"],
        tests.map((r) => {
          const v = r.vs_round0;
          return [r.name, v.n, pct(v.acc_a), pct(v.acc_b), pts(v.diff), v.ci95 ? `${pts(v.ci95[0])} to ${pts(v.ci95[1])}` : "-",
            v.fixed, v.broken, pval(v.p)];
        })));
      root.append(el("p", "caption", "fixed: wrong at round-0, right at this stage; broken: the reverse; " +
        "p: exact two-sided sign test on fixed vs broken; CI: 95% Wald interval on the paired differences."));
    }
  }

  // ------------------------------------------------------------ explorer

  const state = { round: 0, problem: null, node: null, right: false, pairs: false };

  function readHash() {
    const h = new URLSearchParams(location.hash.slice(1));
    const sel = DATA.select || {};
    const roundName = h.get("round") ?? sel.round;
    const i = DATA.rounds.findIndex((r) => r.name === roundName);
    state.round = i >= 0 ? i : 0;
    state.problem = h.get("problem") ?? sel.problem ?? null;
    state.node = h.has("node") ? Number(h.get("node")) : null;
    state.right = h.get("right") === "1";
    state.pairs = h.get("pairs") === "1";
  }

  function writeHash() {
    const h = new URLSearchParams();
    const r = DATA.rounds[state.round];
    if (r) h.set("round", r.name);
    if (state.problem !== null) h.set("problem", state.problem);
    if (state.node !== null) h.set("node", String(state.node));
    if (state.right) h.set("right", "1");
    if (state.pairs) h.set("pairs", "1");
    try { history.replaceState(null, "", "#" + h.toString()); } catch (e) { /* some file:// setups refuse; harmless */ }
  }

  function visibleTrees(round) {
    return round.trees.filter((t) => (!state.right || t.correct === true) && (!state.pairs || t.pairs.length > 0));
  }

  function renderExplorer(root) {
    root.append(el("h2", null, "Search trees"));
    if (!DATA.rounds.length) {
      root.append(el("p", "muted", "No trees.jsonl in this run yet."));
      return;
    }
    const controls = el("div", "controls");
    const roundSel = el("select");
    roundSel.id = "round-select";
    DATA.rounds.forEach((r, i) => {
      const o = el("option", null, `${r.name} (${r.summary.trees} trees, ${r.summary.pairs} pairs)`);
      o.value = String(i);
      roundSel.append(o);
    });
    const right = el("input");
    right.type = "checkbox";
    right.id = "filter-right";
    const withPairs = el("input");
    withPairs.type = "checkbox";
    withPairs.id = "filter-pairs";
    const lab = (input, text) => { const l = el("label", null, input, " " + text); return l; };
    const shownNote = el("span", "muted");
    controls.append(lab(roundSel, ""), lab(right, "committed answer right"), lab(withPairs, "gave pairs"), shownNote);
    const roundNote = el("p", "muted");
    const layout = el("div", "layout");
    const list = el("nav", "problems");
    list.id = "problem-list";
    const pane = el("div", "tree-pane");
    pane.id = "tree-pane";
    layout.append(list, pane);
    root.append(controls, roundNote, layout);

    function refresh(keepNode) {
      const round = DATA.rounds[state.round];
      roundSel.value = String(state.round);
      right.checked = state.right;
      withPairs.checked = state.pairs;
      const s = round.summary;
      roundNote.textContent = `${round.name}: ${s.trees} trees, committed answer right in ${s.correct}, ` +
        `${s.pairs} pairs from ${s.trees_with_pairs} trees, ${isNum(s.mean_nodes) ? s.mean_nodes.toFixed(1) : "-"} nodes per tree, ` +
        `${count(s.tokens)} search tokens` + (round.shown < s.trees ? `. The page holds the first ${round.shown} trees ` +
        `(--trees N to change).` : ".") + (s.skipped_records ? ` ${s.skipped_records} records that are no trees skipped.` : "");
      const trees = visibleTrees(round);
      shownNote.textContent = `${trees.length} of ${round.trees.length} problems shown`;
      if (!trees.some((t) => t.problem_id === state.problem)) {
        if (state.problem !== null) keepNode = false; // the problem it belonged to is filtered out
        state.problem = trees.length ? trees[0].problem_id : null;
      }
      if (!keepNode) state.node = null;
      list.replaceChildren();
      for (const t of trees) {
        const b = el("button", "problem" + (t.problem_id === state.problem ? " selected" : ""),
          el("span", t.correct ? "ok" : "bad", t.correct ? "✓" : "✗"), " ", el("span", "pid", t.problem_id),
          el("span", "meta", plural(t.nodes.rows.length, "node") + (t.pairs.length ? ` · ${plural(t.pairs.length, "pair")}` : "")));
        b.type = "button";
        b.addEventListener("click", () => { state.problem = t.problem_id; state.node = null; refresh(true); });
        list.append(b);
      }
      pane.replaceChildren();
      const tree = trees.find((t) => t.problem_id === state.problem);
      if (tree) renderTree(pane, tree);
      else pane.append(el("p", "muted", "No problem passes the filters."));
      writeHash();
    }

    roundSel.addEventListener("change", () => { state.round = Number(roundSel.value); state.problem = null; refresh(false); });
    right.addEventListener("change", () => { state.right = right.checked; refresh(true); });
    withPairs.addEventListener("change", () => { state.pairs = withPairs.checked; refresh(true); });
    refresh(true);
  }

  const CHECK_LABEL = { ok: "check ok", bad: "check false", unknown: "check ?" };

  // A tree's nodes come as {keys, rows} (key names once per tree); as objects without the nulls.
  function nodesOf(tree) {
    if (!tree._nodes) {
      const keys = tree.nodes.keys;
      tree._nodes = tree.nodes.rows.map((r) => {
        const o = {};
        keys.forEach((k, i) => { if (r[i] !== null && r[i] !== undefined) o[k] = r[i]; });
        if (o.parent === undefined) o.parent = null;
        return o;
      });
    }
    return tree._nodes;
  }

  function renderTree(pane, tree) {
    const nodes = nodesOf(tree);
    const byId = new Map(nodes.map((n) => [n.id, n]));
    const kids = new Map();
    for (const n of nodes) {
      if (n.parent === null || n.parent === undefined) continue;
      if (!kids.has(n.parent)) kids.set(n.parent, []);
      kids.get(n.parent).push(n);
    }
    for (const list of kids.values()) list.sort((a, b) => (b.N || 0) - (a.N || 0) || a.id - b.id);
    const onPath = new Set(tree.path);
    const rootNode = byId.get(tree.path[0]) || nodes[0];
    const rootN = Math.max(1, rootNode.N || 0, ...nodes.map((n) => n.N || 0));
    const marks = new Map();
    tree.pairs.forEach((p, i) => {
      for (const role of ["chosen", "rejected"]) {
        const id = p[role + "_node"];
        if (id === null || id === undefined) continue;
        if (!marks.has(id)) marks.set(id, []);
        marks.get(id).push({ role, pair: p, index: i });
      }
    });
    const depth = (n) => { let d = 0; while (n && n.parent !== null && n.parent !== undefined) { n = byId.get(n.parent); d++; } return d; };

    // Expanded: the committed path, plus the ancestors of a node named in the URL.
    const expanded = new Set(tree.path);
    const open = new Set();
    if (state.node !== null && byId.has(state.node)) {
      open.add(state.node);
      for (let n = byId.get(byId.get(state.node).parent); n; n = byId.get(n.parent)) expanded.add(n.id);
    }

    // Header: the problem and the committed result.
    const head = el("div", "tree-head");
    head.append(el("h3", null, `problem ${tree.problem_id} `,
      el("span", tree.correct ? "ok" : "bad", tree.correct ? "✓ committed answer right" : "✗ committed answer wrong")));
    if (tree.question !== undefined && tree.question !== null) head.append(el("pre", "question", String(tree.question)));
    const st = tree.stats || {};
    head.append(el("p", "muted", `gold answer: `, el("code", null, String(tree.answer ?? "-")),
      ` · ${plural(nodes.length, "node")} · root visits ${rootNode.N ?? "-"} · ${count(st.tokens)} tokens` +
      (isNum(st.wall_share_s) ? ` · ${num(st.wall_share_s, 1)} s` : isNum(st.wall_s) ? ` · ${num(st.wall_s, 1)} s` : "") +
      (st.closed_reason ? ` · closed: ${st.closed_reason}` : "")));
    const buttons = el("div", "tree-buttons");
    const expandAll = el("button", null, "expand all");
    const collapse = el("button", null, "committed path only");
    expandAll.type = collapse.type = "button";
    buttons.append(expandAll, collapse, el("span", "legend",
      el("span", "path-swatch", "committed path"), " · bar: share of the most visited node's visits · ",
      el("span", "mark chosen", "chosen"), " ", el("span", "mark rejected", "rejected"), " pair sides with ε (label smoothing) · click a step for its details"));
    head.append(buttons);
    const ul = el("ul", "tree");
    ul.id = "tree";
    pane.append(head, ul);

    function detail(n) {
      const dl = el("dl", "detail");
      dl.id = "detail-" + n.id;
      const add = (k, v, key) => {
        const dd = el("dd", null, v);
        if (key) dd.dataset.key = key;
        dl.append(el("dt", null, k), dd);
      };
      add("node", `${n.id} (depth ${depth(n)}, parent ${n.parent ?? "-"})`);
      add("N (visits)", n.N ?? "-", "N");
      add("Q", num(n.Q, 3), "Q");
      if (n.commit_N !== undefined || n.commit_Q !== undefined) add("at commit", `Q ${num(n.commit_Q, 3)}, N ${n.commit_N ?? "-"}`, "commit");
      add("prior", num(n.prior, 3), "prior");
      add("draws", n.draws ?? "-", "draws");
      add("checker", n.check ?? "-", "check");
      add("value v", num(n.value, 3), "value");
      for (const [k, v] of Object.entries(n.values || {})) add(`  term ${k}`, num(v, 3), "values." + k);
      if (n.self_eval !== undefined) add("self-eval C", num(n.self_eval, 3), "self_eval");
      if (n.outcome !== undefined) add("outcome O", num(n.outcome, 3), "outcome");
      add("reward r", num(n.reward, 3), "reward");
      if (n.rollouts) add("rollouts", n.rollouts, "rollouts");
      if (n.terminal) add("terminal", `${n.finish ?? "yes"}; answer ${n.correct === true ? "right" : n.correct === false ? "wrong" : "unchecked"}`, "terminal");
      for (const m of marks.get(n.id) || []) {
        const p = m.pair;
        add(`pair ${m.index + 1}`, `${m.role} at depth ${p.depth}: Q ${num(p.q_chosen, 3)} vs ${num(p.q_rejected, 3)}, ` +
          `N ${p.n_chosen ?? "-"} vs ${p.n_rejected ?? "-"}, ε ${num(p.label_smoothing, 3)}`, "pair");
      }
      add("text", el("pre", "full", n.parent === null || n.parent === undefined ? "(root: the prompt)" : String(n.text ?? "")), "text");
      return dl;
    }

    function nodeItem(n) {
      const li = el("li", "node" + (onPath.has(n.id) ? " on-path" : ""));
      li.id = "node-" + n.id;
      const row = el("div", "row");
      const children = kids.get(n.id) || [];
      const toggle = el("button", "toggle", children.length ? (expanded.has(n.id) ? "▾" : "▸") : "·");
      toggle.type = "button";
      toggle.disabled = !children.length;
      toggle.setAttribute("aria-expanded", String(expanded.has(n.id)));
      if (children.length) toggle.title = `${children.length} children`;
      const bar = el("span", "visits");
      const fill = el("span", "fill");
      fill.style.width = (100 * Math.min(1, (n.N || 0) / rootN)).toFixed(1) + "%";
      bar.append(fill);
      const isRoot = n.parent === null || n.parent === undefined;
      const text = stepText(n.text);
      const step = el("span", "step" + (isRoot ? " root" : text ? "" : " empty"), isRoot ? "(root)" : text || "∅");
      const badges = el("span", "badges",
        el("span", "badge", "N ", el("b", null, n.N ?? "-")),
        el("span", "badge", "Q ", el("b", null, num(n.Q, 3))),
        isRoot ? null : el("span", "badge muted", "p " + num(n.prior, 2)));
      if ((n.draws || 1) > 1) badges.append(el("span", "badge muted", `×${n.draws} draws`));
      if (n.check) badges.append(el("span", "badge check-" + n.check, CHECK_LABEL[n.check] || "check " + n.check));
      if (n.terminal) badges.append(el("span", "badge " + (n.correct ? "ok" : "bad"), n.correct ? "✓ right" : n.correct === false ? "✗ wrong" : "end"));
      for (const m of marks.get(n.id) || []) badges.append(el("span", "mark " + m.role, `${m.role} ε ${num(m.pair.label_smoothing, 2)}`));
      row.append(toggle, bar, step, badges);
      li.append(row);
      let dl = null;
      const showDetail = (on) => {
        if (on && !dl) { dl = detail(n); row.after(dl); open.add(n.id); }
        if (!on && dl) { dl.remove(); dl = null; open.delete(n.id); }
      };
      step.addEventListener("click", () => { showDetail(!dl); state.node = dl ? n.id : null; writeHash(); });
      let sub = null;
      const showChildren = (on) => {
        if (on && !sub && children.length) { sub = el("ul"); for (const c of children) sub.append(nodeItem(c)); li.append(sub); }
        if (!on && sub) { sub.remove(); sub = null; }
        if (on) expanded.add(n.id); else expanded.delete(n.id);
        toggle.textContent = children.length ? (on ? "▾" : "▸") : "·";
        toggle.setAttribute("aria-expanded", String(on));
      };
      toggle.addEventListener("click", () => showChildren(!sub));
      if (open.has(n.id)) showDetail(true);
      if (expanded.has(n.id)) showChildren(true);
      return li;
    }

    function redraw() {
      ul.replaceChildren(nodeItem(rootNode));
    }
    expandAll.addEventListener("click", () => { for (const n of nodes) expanded.add(n.id); redraw(); });
    collapse.addEventListener("click", () => { expanded.clear(); for (const id of tree.path) expanded.add(id); redraw(); });
    redraw();

    // The pairs drawn from this tree.
    pane.append(el("h3", null, `Pairs from this tree (${tree.pairs.length})`));
    if (!tree.pairs.length) {
      pane.append(el("p", "muted", "none (extract-pairs made no pair from this tree, or the round has no pairs.jsonl)"));
    } else {
      const t = el("table", "pairs");
      const hr = el("tr");
      for (const h of ["#", "depth", "chosen", "rejected", "Q chosen", "Q rejected", "N chosen", "N rejected", "ε"]) hr.append(el("th", null, h));
      t.append(el("thead", null, hr));
      const body = el("tbody");
      tree.pairs.forEach((p, i) => {
        const side = (role) => {
          const id = p[role + "_node"];
          if (id === null || id === undefined) return el("span", "unplaced", stepText(p[role]) + " (no node matches)");
          let merged = 0; // extract-pairs merges a side with its chain of only children
          for (let c = kids.get(id); c && c.length === 1; c = kids.get(c[0].id)) merged++;
          const a = el("a", "goto", `node ${id}: ` + stepText(byId.get(id).text) + (merged ? ` (+${plural(merged, "merged step")})` : ""));
          a.href = "#";
          a.addEventListener("click", (ev) => { ev.preventDefault(); state.node = id; pane.replaceChildren(); renderTree(pane, tree); writeHash(); scrollTo(document.getElementById("node-" + id)); });
          return a;
        };
        const r = el("tr");
        for (const c of [String(i + 1), p.depth ?? "-", side("chosen"), side("rejected"), num(p.q_chosen, 3), num(p.q_rejected, 3),
          p.n_chosen ?? "-", p.n_rejected ?? "-", num(p.label_smoothing, 3)]) r.append(el("td", null, c));
        body.append(r);
      });
      t.append(body);
      pane.append(t);
    }
    if (state.node !== null) scrollTo(document.getElementById("node-" + state.node));
  }

  // ------------------------------------------------------------ start

  document.title = DATA.title || document.title;
  document.getElementById("title").textContent = DATA.title || "mcts-pref report";
  document.getElementById("subtitle").textContent = `written by mcts-pref ${DATA.version || ""}; ` +
    "a self-contained page: the data is embedded, nothing is fetched.";
  readHash();
  renderRunView(document.getElementById("run-view"));
  renderExplorer(document.getElementById("explorer"));
  window.addEventListener("hashchange", () => { readHash(); const ex = document.getElementById("explorer"); ex.replaceChildren(); renderExplorer(ex); });
})();
