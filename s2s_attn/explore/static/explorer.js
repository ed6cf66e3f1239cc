// The explorer page: asks s2s-explore's server (or, in an exported file, the answers embedded in it) and draws
// each run's translation, attention heatmap, heads, beam and checkpoint slider, and the gold alignments.
"use strict";
(function () {
  const EXPORTED = window.S2S_EXPORT;  // null when served
  const $ = (id) => document.getElementById(id);
  let info = null;
  let request = null;  // the sentence and beam of the columns shown
  const runs = [];  // per run: {column, view, checkpoint, head, hypothesis}

  // ---- answers: from the server, or from the exported file --------------------------------------------------

  function answerKey(body) {
    return [body.sentence, body.beam, body.run, body.checkpoint].join("\u0000");
  }

  async function api(path, body) {
    if (EXPORTED) {
      return fromExport(path, body);
    }
    const options = body === undefined ? {} : {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
    };
    let response;
    try {
      response = await fetch(path, options);
    } catch (error) {
      throw new Error("the explorer's server does not answer: is s2s-explore still running?");
    }
    let payload;
    try {
      payload = await response.json();
    } catch (error) {
      throw new Error(`the server answered ${response.status} without JSON`);
    }
    if (!response.ok) {
      throw new Error(payload.error || response.statusText);
    }
    return payload;
  }

  function fromExport(path, body) {
    if (path === "/api/info") return EXPORTED.info;
    if (path === "/api/gold/scores") return EXPORTED.gold_scores;
    if (path.startsWith("/api/gold?index=")) {
      const sentence = EXPORTED.gold_sentences[Number(path.split("=")[1])];
      if (!sentence) throw new Error("that gold sentence is not in this exported file");
      return sentence;
    }
    const view = EXPORTED.answers[answerKey(body)];
    if (!view) throw new Error("this exported file holds no answer for that choice (export with --beam to add one)");
    return {views: [view]};
  }

  // ---- messages and the hover readout -------------------------------------------------------------------------

  function showMessage(text, kind) {
    const box = $("message");
    box.textContent = text;
    box.className = kind || "";
    box.hidden = !text;
  }

  function readout(text) {
    $("readout").textContent = text;
  }

  // ---- the heatmap ----------------------------------------------------------------------------------------------

  function color(weight) {
    const w = Math.max(0, Math.min(1, weight));
    return `hsl(218, ${40 + 45 * w}%, ${98 - 66 * w}%)`;
  }

  // rows: (target, source) weights; marks: optional {cells: {"t,s": class}, dots: {"t,s": class}}
  function heatmap(rows, srcTokens, tgtTokens, marks) {
    const table = document.createElement("table");
    table.className = "heatmap";
    const head = table.createTHead().insertRow();
    head.appendChild(document.createElement("th"));
    srcTokens.forEach((token) => {
      const th = document.createElement("th");
      const label = document.createElement("span");  // vertical (explorer.css)
      label.textContent = token;
      th.appendChild(label);
      th.scope = "col";
      head.appendChild(th);
    });
    const body = table.createTBody();
    rows.forEach((row, t) => {
      const tr = body.insertRow();
      const th = document.createElement("th");
      th.textContent = tgtTokens[t] === undefined ? "" : tgtTokens[t];
      th.scope = "row";
      tr.appendChild(th);
      row.forEach((weight, s) => {
        const td = tr.insertCell();
        td.style.background = color(weight);
        td.dataset.weight = String(weight);
        td.dataset.row = String(t);
        td.dataset.col = String(s);
        td.title = `${tgtTokens[t]} \u2190 ${srcTokens[s]}: ${weight.toFixed(4)}`;
        const key = `${t},${s}`;
        if (marks && marks.cells[key]) td.classList.add(marks.cells[key]);
        if (marks && marks.dots[key]) {
          const dot = document.createElement("span");
          dot.className = marks.dots[key];
          dot.textContent = "\u25CF";
          td.appendChild(dot);
        }
      });
    });
    table.addEventListener("mouseover", (event) => {
      const td = event.target.closest("td");
      if (!td) return;
      const t = Number(td.dataset.row), s = Number(td.dataset.col);
      table.querySelectorAll(".focus").forEach((el) => el.classList.remove("focus"));
      td.classList.add("focus");
      head.cells[s + 1].classList.add("focus");
      body.rows[t].cells[0].classList.add("focus");
      readout(`${tgtTokens[t]} \u2190 ${srcTokens[s]}: ${Number(td.dataset.weight).toFixed(4)}`);
    });
    return table;
  }

  // ---- one column per run ------------------------------------------------------------------------------------

  function describe(run) {
    const heads = run.heads > 1 ? ` \u00b7 ${run.heads} heads` : "";
    const langs = run.languages && run.languages[0] ? ` \u00b7 ${run.languages[0]}\u2192${run.languages[1]}` : "";
    return `attention ${run.attention} \u00b7 decoder ${run.decoder}${heads}${langs}`;
  }

  function checkpointChoices(run) {
    return [...run.checkpoints, "best"];
  }

  function buildColumns() {
    const main = $("columns");
    main.textContent = "";
    runs.length = 0;
    info.runs.forEach((run) => {
      const column = document.createElement("section");
      column.className = "run";
      column.dataset.run = String(run.index);
      const title = document.createElement("h3");
      title.textContent = run.name;
      const config = document.createElement("p");
      config.className = "config";
      config.textContent = describe(run);
      column.append(title, config);
      const choices = checkpointChoices(run);
      if (choices.length > 1) {  // the slider over the run's step checkpoints, then its best one
        const wrap = document.createElement("label");
        wrap.className = "checkpoint";
        const slider = document.createElement("input");
        slider.type = "range";
        slider.className = "checkpoint-slider";
        slider.min = "0";
        slider.max = String(choices.length - 1);
        slider.value = String(choices.length - 1);
        const label = document.createElement("span");
        label.className = "checkpoint-label";
        label.textContent = "best checkpoint";
        slider.addEventListener("input", () => {
          const choice = choices[Number(slider.value)];
          label.textContent = choice === "best" ? "best checkpoint" : `step ${choice}`;
        });
        slider.addEventListener("change", () => {
          runs[run.index].checkpoint = choices[Number(slider.value)];
          if (request) translateRun(run.index);
        });
        wrap.append("training:", slider, label);
        column.appendChild(wrap);
      }
      const output = document.createElement("div");
      output.className = "output";
      column.appendChild(output);
      main.appendChild(column);
      runs.push({column, output, view: null, checkpoint: "best", head: null, hypothesis: null});
    });
  }

  function render(index) {
    const state = runs[index];
    const view = state.view;
    const out = state.output;
    out.textContent = "";
    if (!view) return;
    const p = document.createElement("p");
    p.className = "translation";
    p.textContent = view.translation;
    out.appendChild(p);
    if (view.note) {
      const note = document.createElement("p");
      note.className = "note";
      note.textContent = view.note;
      out.appendChild(note);
    }
    let rows = view.attention, tgt = view.tgt_tokens;
    if (state.hypothesis) {  // a beam hypothesis picked in the beam's table
      rows = state.hypothesis.attention;
      tgt = state.hypothesis.tokens;
      const showing = document.createElement("p");
      showing.className = "showing";
      showing.textContent = `showing the hypothesis \u201c${state.hypothesis.text}\u201d (${state.hypothesis.score})`;
      const back = document.createElement("button");
      back.type = "button";
      back.textContent = "back to the translation";
      back.addEventListener("click", () => { state.hypothesis = null; render(index); });
      showing.appendChild(back);
      out.appendChild(showing);
    } else if (view.heads) {
      const tabs = document.createElement("div");
      tabs.className = "tabs";
      const names = ["mean", ...view.heads.map((_, h) => `head ${h + 1}`)];
      names.forEach((name, k) => {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = name;
        button.dataset.head = String(k - 1);
        const active = (state.head === null && k === 0) || state.head === k - 1;
        if (active) button.classList.add("active");
        button.addEventListener("click", () => { state.head = k === 0 ? null : k - 1; render(index); });
        tabs.appendChild(button);
      });
      out.appendChild(tabs);
      if (state.head !== null) rows = view.heads[state.head];
    }
    out.appendChild(heatmap(rows, view.src_tokens, tgt));
    if (view.beam) out.appendChild(beamTable(index, view.beam));
  }

  function beamTable(index, beam) {
    const details = document.createElement("details");
    details.className = "beam";
    details.open = true;
    const summary = document.createElement("summary");
    summary.textContent = `the beam (k = ${beam.k}): every hypothesis kept at each step; click one to see its attention`;
    details.appendChild(summary);
    const table = document.createElement("table");
    table.className = "beam-steps";
    const head = table.createTHead().insertRow();
    ["step", "kept (log-probability)", "finished (log-probability, ranking score)"].forEach((text) => {
      const th = document.createElement("th");
      th.textContent = text;
      head.appendChild(th);
    });
    const body = table.createTBody();
    const state = runs[index];
    const cell = (hyps) => {
      const td = document.createElement("td");
      hyps.forEach((hyp) => {
        const span = document.createElement("span");
        span.className = "hyp" + (hyp.finished ? " finished" : "") + (state.hypothesis === hyp ? " selected" : "");
        span.textContent = hyp.text || "(empty)";
        const score = document.createElement("span");
        score.className = "score";
        score.textContent = hyp.finished ? `${hyp.score} / ${hyp.norm_score}` : String(hyp.score);
        span.appendChild(score);
        span.addEventListener("click", () => { state.hypothesis = hyp; render(index); });
        td.appendChild(span);
      });
      return td;
    };
    beam.steps.forEach((step) => {
      const tr = body.insertRow();
      tr.insertCell().textContent = String(step.step);
      tr.appendChild(cell(step.live));
      tr.appendChild(cell(step.finished));
    });
    details.appendChild(table);
    return details;
  }

  // ---- translating -------------------------------------------------------------------------------------------

  function currentRequest() {
    const beam = $("decoding").value === "beam" ? Number($("beam-width").value) : 1;
    const sentence = EXPORTED ? $("exported-sentence").value : $("sentence").value;
    return {sentence, beam};
  }

  async function translateRun(index) {
    const state = runs[index];
    state.column.classList.add("busy");
    try {
      const answer = await api("/api/translate", {
        sentence: request.sentence, beam: request.beam, run: index, checkpoint: state.checkpoint,
      });
      state.view = answer.views[0];
      state.hypothesis = null;
      render(index);
      state.column.dataset.ready = "true";
    } catch (error) {
      state.view = null;
      render(index);
      showMessage(`${info.runs[index].name}: ${error.message}`);
    } finally {
      state.column.classList.remove("busy");
    }
  }

  async function translateAll(event) {
    if (event) event.preventDefault();
    const next = currentRequest();
    if (!next.sentence.trim()) {
      showMessage("Type a sentence to translate first (the text box is empty).");
      return;
    }
    if (!Number.isInteger(next.beam) || next.beam < 1 || next.beam > 16) {
      showMessage("The beam width k must be a whole number from 2 to 16.");
      return;
    }
    showMessage("");
    request = next;
    runs.forEach((state) => { delete state.column.dataset.ready; });
    await Promise.all(runs.map((_, index) => translateRun(index)));
  }

  // ---- gold alignments ---------------------------------------------------------------------------------------

  async function showGoldSummary() {
    const scores = await api("/api/gold/scores");
    const table = $("gold-summary");
    table.textContent = "";
    const head = table.createTHead().insertRow();
    ["alignment of the gold set", "AER", "precision", "recall"].forEach((text) => {
      const th = document.createElement("th");
      th.textContent = text;
      head.appendChild(th);
    });
    const body = table.createTBody();
    const row = (name, aer, precision, recall, cls) => {
      const tr = body.insertRow();
      if (cls) tr.className = cls;
      [name, aer.toFixed(3), precision.toFixed(3), recall.toFixed(3)].forEach((text) => {
        tr.insertCell().textContent = text;
      });
    };
    scores.runs.forEach((s) => row(`attention: ${info.runs[s.run].name}`, s.aer, s.precision, s.recall, "run-aer"));
    const first = scores.runs[0];
    if (first) row("diagonal baseline", first.diagonal_aer, first.diagonal_precision, first.diagonal_recall, "diagonal");
    table.hidden = false;
  }

  async function showGoldSentence(position) {
    const count = info.gold.sentences;
    const index = Math.min(Math.max(position, 1), count);
    $("gold-index").value = String(index);
    let sentence;
    try {
      sentence = await api(`/api/gold?index=${index - 1}`);
    } catch (error) {
      showMessage(error.message);
      return;
    }
    const columns = $("gold-columns");
    columns.textContent = "";
    const cells = {};
    sentence.sure.forEach(([s, t]) => { cells[`${t},${s}`] = "sure"; });
    sentence.possible.forEach(([s, t]) => { cells[`${t},${s}`] = "possible"; });
    sentence.runs.forEach((view) => {
      const column = document.createElement("section");
      column.className = "run gold-run";
      column.dataset.run = String(view.run);
      const title = document.createElement("h3");
      title.textContent = info.runs[view.run].name;
      const scores = document.createElement("p");
      scores.className = "scores";
      scores.textContent = `sentence AER ${view.aer.toFixed(3)} (precision ${view.precision.toFixed(3)}, ` +
        `recall ${view.recall.toFixed(3)}); diagonal ${sentence.diagonal_aer.toFixed(3)}`;
      const dots = {};
      view.links.forEach((link) => { dots[`${link.target},${link.source}`] = link.hit ? "hit" : "miss"; });
      column.append(title, scores, heatmap(view.attention, sentence.src_words, sentence.tgt_words, {cells, dots}));
      columns.appendChild(column);
    });
    columns.dataset.index = String(index);
  }

  async function setUpGold() {
    if (!info.gold) return;
    $("gold").hidden = false;
    $("gold-count").textContent = String(info.gold.sentences);
    $("gold-prev").addEventListener("click", () => showGoldSentence(Number($("gold-index").value) - 1));
    $("gold-next").addEventListener("click", () => showGoldSentence(Number($("gold-index").value) + 1));
    $("gold-index").addEventListener("change", () => showGoldSentence(Number($("gold-index").value)));
    try {
      await showGoldSummary();
    } catch (error) {
      showMessage(error.message);
    }
    await showGoldSentence(1);
  }

  // ---- start ---------------------------------------------------------------------------------------------------

  async function start() {
    try {
      info = await api("/api/info");
    } catch (error) {
      showMessage(error.message);
      return;
    }
    $("beam-width").value = String(info.default_beam);
    $("decoding").addEventListener("change", () => {
      $("beam-width-label").hidden = $("decoding").value !== "beam";
      if (request) translateAll();
    });
    $("beam-width").addEventListener("change", () => { if (request) translateAll(); });
    $("translate-form").addEventListener("submit", translateAll);
    if (EXPORTED) {  // a fixed list of sentences instead of the text box
      $("sentence").hidden = true;
      const select = $("exported-sentence");
      select.hidden = false;
      info.sentences.forEach((text) => {
        const option = document.createElement("option");
        option.value = text;
        option.textContent = text;
        select.appendChild(option);
      });
      select.addEventListener("change", () => translateAll());
      const decoding = $("decoding");
      if (!info.beams.some((beam) => beam > 1)) decoding.querySelector("option[value=beam]").disabled = true;
      $("beam-width").value = String(Math.max(...info.beams));
      $("beam-width").readOnly = true;
      $("subtitle").textContent = `Exported from s2s-explore: ${info.sentences.length} sentence(s).`;
    }
    buildColumns();
    if (EXPORTED && info.sentences.length) await translateAll();
    setUpGold();
    document.body.dataset.ready = "true";
  }

  start();
})();
