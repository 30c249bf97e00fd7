// pyneuro's draw-a-digit page: draw on the pad, and while you draw the page downsamples the
// ink as the model's training images were made, asks POST /predict, and shows the class, the
// probabilities and every hidden layer's activations. Plain JavaScript, no libraries.
//
// For tests and the curious: window.pyneuroLast = {seq, pixels, probabilities, class,
// activations} is the answer on screen and the pixels sent for it; window.pyneuroIdle()
// is true when no request is in flight or waiting.
"use strict";

(() => {
  const THROTTLE_MS = 50;          // at most one request per 50 ms while drawing
  const PEN_WIDTH = 20;            // in pad pixels (the pad is 280 × 280)
  const LAYER_GRID_PX = 224;       // a hidden layer's grid is about this wide
  const COLOURS = {                // hidden-layer squares (on a dark background)
    background: [17, 21, 28], zero: [45, 51, 64], mid: [232, 89, 12], high: [255, 212, 59],
    negative: [77, 171, 247],
  };

  const $ = (id) => document.getElementById(id);
  const pad = $("pad");
  const padCtx = pad.getContext("2d", { willReadFrequently: true });
  let model = null;                // GET /model
  let stroke = null;               // {id, last: [x, y]} while a pointer draws
  let inked = false;
  let generation = 0;              // bumped by Clear: answers for an older drawing are dropped
  let seq = 0, shownSeq = 0, inFlight = false, dirty = false, timer = null, lastSent = -Infinity;
  window.pyneuroLast = null;
  window.pyneuroIdle = () => !inFlight && !dirty && timer === null;

  // ---- downsampling: the pad's ink (alpha, 0..1) to the model's input pixels --------------

  function readInk() {
    const { data } = padCtx.getImageData(0, 0, pad.width, pad.height);
    const ink = new Float64Array(pad.width * pad.height);
    for (let i = 0; i < ink.length; i++) ink[i] = data[4 * i + 3] / 255;
    return ink;
  }

  // The smallest box [x0, x1) × [y0, y1) holding every inked pixel; null for a blank pad.
  function inkBox(ink, W, H) {
    let x0 = W, y0 = H, x1 = 0, y1 = 0;
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        if (ink[y * W + x] > 0) {
          if (x < x0) x0 = x;
          if (x >= x1) x1 = x + 1;
          if (y < y0) y0 = y;
          if (y >= y1) y1 = y + 1;
        }
      }
    }
    return x1 > x0 ? { x0, y0, x1, y1 } : null;
  }

  // For each of nDst cells over nSrc: the source cells it covers, weighted by the overlap of
  // [s, s+1) with [d·r, (d+1)·r), r = nSrc/nDst, divided by r (the weights sum to 1).
  function spans(nSrc, nDst) {
    const r = nSrc / nDst, out = [];
    for (let d = 0; d < nDst; d++) {
      const lo = d * r, hi = Math.min((d + 1) * r, nSrc), first = Math.floor(lo), w = [];
      for (let s = first; s < Math.min(Math.ceil(hi), nSrc); s++) {
        w.push((Math.min(s + 1, hi) - Math.max(s, lo)) / r);
      }
      out.push({ first, w });
    }
    return out;
  }

  // Area-averaging (box filter, anti-aliased) resize of a sw × sh image to dw × dh: each
  // destination pixel is the mean of the source area it covers (as Pillow's Image.BOX).
  function resizeArea(src, sw, sh, dw, dh) {
    const xs = spans(sw, dw), ys = spans(sh, dh);
    const rows = new Float64Array(sh * dw);
    for (let y = 0; y < sh; y++) {
      for (let d = 0; d < dw; d++) {
        const { first, w } = xs[d];
        let acc = 0;
        for (let k = 0; k < w.length; k++) acc += src[y * sw + first + k] * w[k];
        rows[y * dw + d] = acc;
      }
    }
    const out = new Float64Array(dw * dh);
    for (let d = 0; d < dh; d++) {
      const { first, w } = ys[d];
      for (let x = 0; x < dw; x++) {
        let acc = 0;
        for (let k = 0; k < w.length; k++) acc += rows[(first + k) * dw + x] * w[k];
        out[d * dw + x] = acc;
      }
    }
    return out;
  }

  // The ink's bounding box scaled to fit maxW × maxH, keeping its aspect ratio.
  function fitInk(ink, W, box, maxW, maxH) {
    const bw = box.x1 - box.x0, bh = box.y1 - box.y0;
    const s = Math.min(maxW / bw, maxH / bh);
    const w = Math.min(maxW, Math.max(1, Math.round(bw * s)));
    const h = Math.min(maxH, Math.max(1, Math.round(bh * s)));
    const crop = new Float64Array(bw * bh);
    for (let y = 0; y < bh; y++) {
      for (let x = 0; x < bw; x++) crop[y * bw + x] = ink[(box.y0 + y) * W + box.x0 + x];
    }
    return { img: resizeArea(crop, bw, bh, w, h), w, h };
  }

  // fit placed in a W × H frame with its top-left corner at (ox, oy); what falls outside is cut.
  function place(fit, W, H, ox, oy) {
    const out = new Float64Array(W * H);
    for (let y = 0; y < fit.h; y++) {
      for (let x = 0; x < fit.w; x++) {
        const X = x + ox, Y = y + oy;
        if (X >= 0 && X < W && Y >= 0 && Y < H) out[Y * W + X] = fit.img[y * fit.w + x];
      }
    }
    return out;
  }

  function centred(fit, W, H) {
    return place(fit, W, H, Math.floor((W - fit.w) / 2), Math.floor((H - fit.h) / 2));
  }

  // Centre of mass (pixel i spans [i, i+1), its centre is i + 0.5).
  function centreOfMass(fit) {
    let m = 0, mx = 0, my = 0;
    for (let y = 0; y < fit.h; y++) {
      for (let x = 0; x < fit.w; x++) {
        const v = fit.img[y * fit.w + x];
        m += v; mx += v * (x + 0.5); my += v * (y + 0.5);
      }
    }
    return [mx / m, my / m];
  }

  const DOWNSAMPLE = {
    // MNIST (LeCun et al.): the ink's box scaled to fit 20 × 20, keeping the aspect ratio
    // (anti-aliased), placed in 28 × 28 so its centre of mass is at the centre.
    mnist(ink, W, box, [h, w]) {
      const fit = fitInk(ink, W, box, 20, 20);
      const [cx, cy] = centreOfMass(fit);
      return place(fit, w, h, Math.round(w / 2 - cx), Math.round(h / 2 - cy));
    },
    // UCI optical digits (Alpaydin & Kaynak): the ink's box scaled to fit a 32 × 32 bitmap,
    // then each 4 × 4 block's count of ink pixels (0..16), here divided by 16.
    "uci-digits"(ink, W, box) {
      const bitmap = centred(fitInk(ink, W, box, 32, 32), 32, 32);
      const counts = new Float64Array(64);
      for (let y = 0; y < 32; y++) {
        for (let x = 0; x < 32; x++) if (bitmap[y * 32 + x] >= 0.5) counts[(y >> 2) * 8 + (x >> 2)] += 1;
      }
      return counts.map((c) => c / 16);
    },
    // Any other size: the ink's box scaled to fit, centred.
    fit(ink, W, box, [h, w]) {
      return centred(fitInk(ink, W, box, w, h), w, h);
    },
  };

  // The model's input for what is on the pad (a plain Array of numbers in [0, 1]), or null.
  function currentPixels() {
    const ink = readInk();
    const box = inkBox(ink, pad.width, pad.height);
    if (!box) return null;
    const image = DOWNSAMPLE[model.downsample](ink, pad.width, box, model.input_shape);
    const low = model.ink === "low";
    return Array.from(image, (v) => {
      const p = Math.min(1, Math.max(0, v));      // area weights may sum to 1 ± 1 ulp
      return low ? 1 - p : p;
    });
  }

  // ---- talking to the server ------------------------------------------------------------

  async function askJSON(path, options) {
    const r = await fetch(path, options);
    const doc = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(`${path}: ${doc.error || `HTTP ${r.status}`}`);
    return doc;
  }

  function request() {
    if (timer !== null) { clearTimeout(timer); timer = null; }
    if (!model || !inked) return;
    if (inFlight) { dirty = true; return; }      // sent again when the answer comes
    const pixels = currentPixels();
    if (!pixels) return;
    const mySeq = ++seq, myGeneration = generation;
    inFlight = true;
    lastSent = performance.now();
    askJSON("predict", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ pixels }),
    }).then((answer) => {
      if (myGeneration === generation && mySeq > shownSeq) show(mySeq, pixels, answer);
      setStatus("");
    }).catch((e) => setStatus(e.message || String(e))).finally(() => {
      inFlight = false;
      if (dirty) { dirty = false; request(); }
    });
  }

  function throttled() {
    const wait = THROTTLE_MS - (performance.now() - lastSent);
    if (wait <= 0) request();
    else if (timer === null) timer = setTimeout(() => { timer = null; request(); }, wait);
  }

  function setStatus(text) { $("status").textContent = text; }

  // ---- showing an answer ----------------------------------------------------------------

  function show(mySeq, pixels, answer) {
    shownSeq = mySeq;
    const p = answer.probabilities, k = answer.class;
    $("predicted-class").textContent = String(k);
    $("confidence").textContent = `${(100 * p[k]).toFixed(1)} % sure`;
    document.querySelectorAll("#bars li").forEach((li, i) => {
      li.dataset.probability = String(p[i]);
      li.classList.toggle("top", i === k);
      li.querySelector(".fill").style.width = `${(100 * p[i]).toFixed(2)}%`;
      li.querySelector(".value").textContent = `${(100 * p[i]).toFixed(1)} %`;
    });
    drawInput(pixels);
    answer.activations.forEach((a, i) => drawLayer(i, a));
    window.pyneuroLast = { seq: mySeq, pixels, probabilities: p, class: k, activations: answer.activations };
  }

  function showBlank() {
    $("predicted-class").textContent = "–";
    $("confidence").textContent = "draw something";
    document.querySelectorAll("#bars li").forEach((li) => {
      delete li.dataset.probability;
      li.classList.remove("top");
      li.querySelector(".fill").style.width = "0";
      li.querySelector(".value").textContent = "";
    });
    drawInput(null);
    if (model) model.hidden.forEach((_, i) => drawLayer(i, null));
    window.pyneuroLast = null;
  }

  function drawInput(pixels) {
    const view = $("input-view"), ctx = view.getContext("2d");
    const [h, w] = model ? model.input_shape : [1, 1];
    const cell = view.width / Math.max(h, w);
    ctx.fillStyle = model && model.ink === "low" ? "#fff" : "#000";
    ctx.fillRect(0, 0, view.width, view.height);
    if (!pixels) return;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const g = Math.round(255 * pixels[y * w + x]);
        ctx.fillStyle = `rgb(${g},${g},${g})`;
        ctx.fillRect(x * cell, y * cell, cell, cell);
      }
    }
  }

  const mix = (a, b, t) => a.map((v, i) => Math.round(v + (b[i] - v) * t));

  // A unit's colour: zero grey, rising through orange to yellow; negative values in blue.
  function unitColour(t) {
    if (t < 0) return mix(COLOURS.zero, COLOURS.negative, Math.min(1, -t));
    return t <= 0.5 ? mix(COLOURS.zero, COLOURS.mid, 2 * t) : mix(COLOURS.mid, COLOURS.high, 2 * t - 1);
  }

  function drawLayer(i, values) {
    const canvas = document.querySelector(`#layers canvas[data-layer="${i}"]`);
    const ctx = canvas.getContext("2d");
    const cols = Number(canvas.dataset.cols), cell = Number(canvas.dataset.cell);
    ctx.fillStyle = `rgb(${COLOURS.background})`;
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const n = model.hidden[i].width;
    let scale = 0;
    if (values) for (const v of values) scale = Math.max(scale, Math.abs(v));
    for (let u = 0; u < n; u++) {
      const t = values && scale > 0 ? values[u] / scale : 0;
      ctx.fillStyle = `rgb(${unitColour(t)})`;
      ctx.fillRect((u % cols) * cell, Math.floor(u / cols) * cell, cell - 1, cell - 1);
    }
    canvas.parentElement.querySelector("p").textContent =
      `${n} units` + (values ? `; largest |activation| ${scale.toPrecision(3)}` : "");
  }

  // ---- building the page for the model -------------------------------------------------

  function build(doc) {
    model = doc;
    const [h, w] = doc.input_shape;
    const widths = doc.widths.join("–");
    $("model-line").textContent = `Model: ${doc.dataset ? doc.dataset + ", " : ""}${doc.layers.length} layers, `
      + `widths ${widths}, ${doc.dtype}; input ${h}×${w}`;
    $("input-line").textContent = {
      mnist: `${h}×${w}: the ink's box scaled to 20×20, centred by its centre of mass (as MNIST)`,
      "uci-digits": `${h}×${w}: the ink's box scaled to 32×32, ink pixels counted in 4×4 blocks (as the UCI digits)`,
      fit: `${h}×${w}: the ink's box scaled to fit, centred`,
    }[doc.downsample];
    const bars = $("bars");
    bars.replaceChildren();
    for (let c = 0; c < doc.classes; c++) {
      const li = document.createElement("li");
      li.dataset.class = String(c);
      li.innerHTML = '<span class="label"></span><span class="track"><span class="fill"></span></span>'
        + '<span class="value"></span>';
      li.querySelector(".label").textContent = String(c);
      bars.append(li);
    }
    const layers = $("layers");
    layers.replaceChildren();
    if (doc.hidden.length === 0) layers.textContent = "This model has no hidden layers.";
    doc.hidden.forEach((layer, i) => {
      const cols = Math.ceil(Math.sqrt(layer.width)), rows = Math.ceil(layer.width / cols);
      const cell = Math.max(4, Math.min(28, Math.floor(LAYER_GRID_PX / cols)));
      const box = document.createElement("div");
      box.className = "layer";
      const title = document.createElement("h3");
      title.textContent = `Layer ${layer.index}: ${layer.repr}`;
      const canvas = document.createElement("canvas");
      Object.assign(canvas.dataset, { layer: String(i), cols: String(cols), cell: String(cell) });
      canvas.width = cols * cell;
      canvas.height = rows * cell;
      canvas.setAttribute("aria-label", `activations of layer ${layer.index}`);
      box.append(title, document.createElement("p"), canvas);
      layers.append(box);
    });
    const view = $("input-view");
    view.width = view.height = Math.max(h, w) * Math.max(1, Math.floor(112 / Math.max(h, w)));
    showBlank();
  }

  // ---- drawing --------------------------------------------------------------------------

  function point(e) {
    const r = pad.getBoundingClientRect();
    return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
  }

  // A round-ended pen line from one point to another (a dot where they are the same).
  function ink(from, to) {
    padCtx.fillStyle = padCtx.strokeStyle = "#fff";
    padCtx.beginPath();
    if (from[0] === to[0] && from[1] === to[1]) {
      padCtx.arc(from[0], from[1], PEN_WIDTH / 2, 0, 2 * Math.PI);
      padCtx.fill();
    } else {
      padCtx.lineWidth = PEN_WIDTH;
      padCtx.lineCap = "round";
      padCtx.moveTo(...from);
      padCtx.lineTo(...to);
      padCtx.stroke();
    }
    inked = true;
  }

  pad.addEventListener("pointerdown", (e) => {
    if (stroke || (e.pointerType === "mouse" && e.button !== 0)) return;
    e.preventDefault();
    pad.setPointerCapture(e.pointerId);
    const p = point(e);
    stroke = { id: e.pointerId, last: p };
    ink(p, p);                                 // a dot, for a tap
    throttled();
  });
  pad.addEventListener("pointermove", (e) => {
    if (!stroke || e.pointerId !== stroke.id) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
    for (const ev of events.length ? events : [e]) {
      const p = point(ev);
      ink(stroke.last, p);
      stroke.last = p;
    }
    throttled();
  });
  const endStroke = (e) => {
    if (!stroke || e.pointerId !== stroke.id) return;
    stroke = null;
    request();                                 // the finished stroke, at once
  };
  for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) pad.addEventListener(type, endStroke);

  $("clear").addEventListener("click", () => {
    padCtx.clearRect(0, 0, pad.width, pad.height);
    inked = false;
    generation += 1;
    dirty = false;
    if (timer !== null) { clearTimeout(timer); timer = null; }
    showBlank();
  });

  askJSON("model").then(build).catch((e) => setStatus(`cannot read the model: ${e.message || e}`));
})();
