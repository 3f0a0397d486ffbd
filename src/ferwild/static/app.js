// ferwild web page: upload images (or a webcam snapshot) to POST /predict and draw the results.
// No framework, no external resources. Every string that comes from the server or from a file
// name is put into the page with textContent / canvas fillText, never parsed as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const els = {
    info: $("model-info"), hint: $("limits-hint"), drop: $("drop-zone"), pick: $("pick"),
    input: $("file-input"), status: $("status"), results: $("results"), clear: $("clear"),
    camera: $("camera"), camStart: $("camera-start"), camLive: $("camera-live"),
    video: $("camera-video"), camSnap: $("camera-snap"), camStop: $("camera-stop"),
    camError: $("camera-error"), template: $("result-template"),
  };

  // Box colours, chosen to stay distinguishable on photos and for common colour-vision deficiencies.
  const COLORS = ["#ff7a00", "#00b3ff", "#ff3d8b", "#3ddc84", "#ffd400", "#b388ff", "#00e5d0", "#ff5252"];
  const limits = { maxFiles: 16, maxBytes: 20 * 1024 * 1024 };
  let labels = [];
  let pending = 0;
  let busy = 0;
  let cameraStream = null;

  const pct = (p) => `${Math.round(p * 100)}%`;
  const pct1 = (p) => `${(p * 100).toFixed(1)}%`;
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const fmtBytes = (n) => (n >= 1024 * 1024
    ? `${+(n / 1024 / 1024).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1024))} KB`);

  // ------------------------------------------------------------------ model information
  async function loadInfo() {
    try {
      const res = await fetch("/info", { headers: { Accept: "application/json" } });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const info = await res.json();
      labels = Array.isArray(info.labels) ? info.labels.map(String) : [];
      if (info.limits) {
        limits.maxFiles = Number(info.limits.max_files) || limits.maxFiles;
        limits.maxBytes = Number(info.limits.max_upload_bytes) || limits.maxBytes;
        els.hint.textContent = `JPEG, PNG, WebP, GIF, BMP or TIFF; up to ${fmtBytes(limits.maxBytes)} each. ` +
          "Images are analysed on this server only.";
      }
      const model = info.model_name ?? info.model ?? info.name ?? "model";
      const parts = [`Model ${model}`];
      if (info.backend) parts.push(`${info.backend}${info.device ? ` on ${info.device}` : ""}`);
      if (info.detector) parts.push(`detector ${info.detector}`);
      if (labels.length) parts.push(`${labels.length} expressions: ${labels.join(", ")}`);
      els.info.textContent = parts.join(" · ");
      if (info.description) {
        // what the model is and what it was trained on: a reader must know what reads their photos
        const line = document.createElement("span");
        line.className = "model-description";
        line.textContent = info.description;
        els.info.append(document.createElement("br"), line);
      }
    } catch (err) {
      els.info.textContent = `Model information unavailable (${err.message}).`;
      els.info.classList.add("error");
    }
  }

  // ------------------------------------------------------------------ choosing files
  els.pick.addEventListener("click", () => els.input.click());
  els.input.addEventListener("change", () => {
    handleFiles([...els.input.files]);
    els.input.value = ""; // choosing the same file again fires "change" again
  });

  ["dragenter", "dragover"].forEach((type) => els.drop.addEventListener(type, (ev) => {
    if (!ev.dataTransfer || ![...ev.dataTransfer.types].includes("Files")) return;
    ev.preventDefault();
    ev.dataTransfer.dropEffect = "copy";
    els.drop.classList.add("dragging");
  }));
  ["dragleave", "dragend"].forEach((type) => els.drop.addEventListener(type, (ev) => {
    if (ev.type === "dragleave" && els.drop.contains(ev.relatedTarget)) return;
    els.drop.classList.remove("dragging");
  }));
  els.drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    els.drop.classList.remove("dragging");
    handleFiles([...(ev.dataTransfer?.files ?? [])]);
  });
  // a file dropped next to the zone must not make the browser navigate away from the page
  window.addEventListener("dragover", (ev) => ev.preventDefault());
  window.addEventListener("drop", (ev) => ev.preventDefault());
  // paste an image from the clipboard
  window.addEventListener("paste", (ev) => {
    const files = [...(ev.clipboardData?.files ?? [])];
    if (files.length) handleFiles(files);
  });

  els.clear.addEventListener("click", () => {
    els.results.replaceChildren();
    els.clear.hidden = true;
    setStatus("No images yet.");
  });

  function setStatus(text) { els.status.textContent = text; }

  function handleFiles(files) {
    if (!files.length) return;
    const cards = files.map((file) => ({ file, card: makeCard(file) }));
    els.clear.hidden = false;
    const toSend = [];
    for (const item of cards) {
      if (item.file.size > limits.maxBytes) {
        showError(item.card, `File too large (${fmtBytes(item.file.size)}; the limit is ${fmtBytes(limits.maxBytes)}).`);
      } else if (item.file.size === 0) {
        showError(item.card, "Empty file.");
      } else {
        toSend.push(item);
      }
    }
    for (let i = 0; i < toSend.length; i += limits.maxFiles) upload(toSend.slice(i, i + limits.maxFiles));
  }

  async function upload(batch) {
    pending += batch.length;
    busy += 1;
    setStatus(`Analysing ${plural(pending, "image")}…`);
    const form = new FormData();
    batch.forEach(({ file }) => form.append("files", file, file.name || "image"));
    let message = null;
    try {
      const res = await fetch("/predict", { method: "POST", body: form });
      let body = null;
      try { body = await res.json(); } catch { /* not JSON: reported below */ }
      if (!res.ok) throw new Error(errorDetail(body) || `HTTP ${res.status} ${res.statusText}`);
      if (!body || !Array.isArray(body.results) || body.results.length !== batch.length) {
        throw new Error("unexpected answer from the server");
      }
      body.results.forEach((result, i) => renderResult(batch[i].card, result));
      // a file the server could not read is an answer too, but not an analysed image
      const failed = body.results.filter((r) => r && r.error).length;
      const done = batch.length - failed;
      message = done ? `${plural(done, "image")} analysed in ${Math.round(body.elapsed_ms)} ms` : "No image analysed";
      message += failed ? `; ${plural(failed, "file")} could not be read (see ${failed === 1 ? "its card" : "their cards"}).` : ".";
    } catch (err) {
      const text = err instanceof TypeError ? "The server could not be reached." : err.message;
      batch.forEach(({ card }) => showError(card, `Upload failed: ${text}`));
      message = `Upload failed: ${text}`;
    } finally {
      pending -= batch.length;
      busy -= 1;
      setStatus(busy ? `Analysing ${plural(pending, "image")}…` : message);
    }
  }

  function errorDetail(body) {
    if (!body || body.detail === undefined) return null;
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg ?? JSON.stringify(d)).join("; ");
    return JSON.stringify(body.detail);
  }

  // ------------------------------------------------------------------ result cards
  function makeCard(file) {
    const node = els.template.content.firstElementChild.cloneNode(true);
    const name = file.name || "image";
    node.querySelector(".card-name").textContent = name;
    node.querySelector(".card-meta").textContent = "analysing…";
    node.classList.add("loading");
    const canvas = node.querySelector("canvas");
    canvas.setAttribute("aria-label", `${name}: analysing`);
    els.results.prepend(node);
    const card = { node, canvas, name, bitmap: null, result: null };
    node._card = card; // for redrawing on resize
    card.bitmapReady = decodeLocally(file).then((bitmap) => {
      card.bitmap = bitmap;
      draw(card);
    });
    return card;
  }

  async function decodeLocally(file) {
    // EXIF orientation is applied, as the server does, so the boxes line up.
    try {
      return await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch {
      try {
        return await createImageBitmap(file);
      } catch {
        return null; // e.g. TIFF: the browser cannot show it, the server may still read it
      }
    }
  }

  function showError(card, text) {
    card.node.classList.remove("loading");
    const p = card.node.querySelector(".card-error");
    p.textContent = text;
    p.hidden = false;
    card.node.querySelector(".card-meta").textContent = "error";
    card.canvas.setAttribute("aria-label", `${card.name}: ${text}`);
    card.failed = true;
    draw(card);
  }

  function renderResult(card, result) {
    card.result = result;
    card.node.classList.remove("loading");
    const faces = Array.isArray(result.faces) ? result.faces : [];
    if (result.error) {
      showError(card, `Could not analyse this image: ${result.error}`);
      return;
    }
    const meta = [`${result.width} × ${result.height}`, plural(faces.length, "face")];
    if (typeof result.frame === "number") meta.push(`frame ${result.frame}`);
    card.node.querySelector(".card-meta").textContent = meta.join(" · ");
    const summary = faces.map((f, i) => `face ${i + 1} ${f.label} ${pct(f.confidence)}`).join(", ");
    card.canvas.setAttribute("aria-label",
      `${card.name}: ${faces.length ? summary : "no face found"}`);

    const list = card.node.querySelector(".faces");
    list.replaceChildren();
    if (!faces.length) {
      const note = card.node.querySelector(".card-note");
      note.textContent = "No face found in this image.";
      note.hidden = false;
    }
    faces.forEach((face, i) => list.append(faceItem(face, i)));
    draw(card);
  }

  function faceItem(face, i) {
    const color = COLORS[i % COLORS.length];
    const item = el("li", "face");
    const head = el("div", "face-head");
    const swatch = el("span", "swatch");
    swatch.style.backgroundColor = color;
    swatch.setAttribute("aria-hidden", "true");
    head.append(swatch, el("span", "face-title", `Face ${i + 1}`),
      el("strong", "face-label", `${face.label} ${pct(face.confidence)}`));
    const details = [];
    if (typeof face.detection_confidence === "number") details.push(`detection ${pct1(face.detection_confidence)}`);
    if (face.method) details.push(String(face.method));
    if (details.length) head.append(el("span", "face-detail", details.join(" · ")));
    item.append(head);

    const probs = face.probabilities && typeof face.probabilities === "object" ? face.probabilities : {};
    const names = labels.length ? labels.filter((n) => n in probs) : [];
    for (const n of Object.keys(probs)) if (!names.includes(n)) names.push(n);
    const top = names.reduce((best, n) => (best === null || probs[n] > probs[best] ? n : best), null);
    const chart = el("ul", "bars");
    chart.setAttribute("aria-label", `Face ${i + 1} probabilities`);
    for (const n of names) {
      const p = Math.min(1, Math.max(0, Number(probs[n]) || 0));
      const row = el("li", n === top ? "bar-row is-top" : "bar-row");
      const track = el("span", "bar-track");
      track.setAttribute("aria-hidden", "true");
      const fill = el("span", "bar-fill");
      fill.style.width = `${(p * 100).toFixed(2)}%`;
      track.append(fill);
      row.append(el("span", "bar-name", n), track, el("span", "bar-value", pct1(p)));
      chart.append(row);
    }
    item.append(chart);
    return item;
  }

  // ------------------------------------------------------------------ drawing
  function draw(card) {
    const { canvas, bitmap, result } = card;
    const imgW = bitmap ? bitmap.width : result?.width || 0;
    const imgH = bitmap ? bitmap.height : result?.height || 0;
    if (!imgW || !imgH) {
      canvas.hidden = true; // nothing to show (yet): not decodable here, no size from the server
      return;
    }
    canvas.hidden = false;
    const box = canvas.parentElement.getBoundingClientRect();
    const maxW = Math.max(160, box.width || 480);
    const maxH = Math.max(240, Math.min(560, window.innerHeight * 0.7));
    // small images (a 64 px crop) are enlarged so the boxes and tags stay readable
    const scale = Math.min(maxW / imgW, maxH / imgH, Math.max(1, 320 / Math.max(imgW, imgH)));
    const cssW = Math.max(1, Math.round(imgW * scale));
    const cssH = Math.max(1, Math.round(imgH * scale));
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
    canvas.style.width = `${cssW}px`;
    canvas.style.height = `${cssH}px`;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    if (bitmap) {
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(bitmap, 0, 0, cssW, cssH);
    } else {
      ctx.fillStyle = "#3a3f4b";
      ctx.fillRect(0, 0, cssW, cssH);
      ctx.fillStyle = "#c9ced8";
      ctx.font = "14px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.fillText("preview not available in this browser", cssW / 2, cssH / 2);
      ctx.textAlign = "start";
    }
    if (!result || result.error || !Array.isArray(result.faces)) return;
    // boxes are in the server's pixel coordinates of the (EXIF-rotated) image
    const sx = cssW / (result.width || imgW);
    const sy = cssH / (result.height || imgH);
    const font = Math.round(Math.min(16, Math.max(11, cssW / 40)));
    ctx.font = `600 ${font}px system-ui, -apple-system, "Segoe UI", sans-serif`;
    ctx.textBaseline = "middle";
    const faces = result.faces.map((face, i) => {
      if (!Array.isArray(face.box) || face.box.length !== 4) return null;
      const [x1, y1, x2, y2] = face.box.map(Number);
      return { face, color: COLORS[i % COLORS.length], x: x1 * sx, y: y1 * sy, w: (x2 - x1) * sx, h: (y2 - y1) * sy };
    }).filter(Boolean);
    const lw = Math.max(2, Math.min(4, cssW / 200));
    ctx.lineWidth = lw;
    for (const f of faces) { // all boxes first, so that no box is drawn over a tag
      ctx.strokeStyle = "rgba(0,0,0,0.55)";
      ctx.strokeRect(f.x - 1, f.y - 1, f.w + 2, f.h + 2);
      ctx.strokeStyle = f.color;
      ctx.strokeRect(f.x, f.y, f.w, f.h);
    }
    // The placement rule of ferwild.recognizer.place_tags (annotated files use the same one):
    // the first spot, in this order, that lies in the image and covers no other face's box
    // and no tag already placed; a face whose tag fits nowhere gets a number and a legend line.
    const hits = (r, q) => r.x < q.x + q.w && q.x < r.x + r.w && r.y < q.y + q.h && q.y < r.y + r.h;
    const padX = 5, tagH = font + 8, gap = lw / 2;
    const placed = [];
    const legend = [];
    for (const f of faces) {
      const tag = `${f.face.label} ${pct(f.face.confidence)}`;
      const w = ctx.measureText(tag).width + 2 * padX, h = tagH;
      const x1 = f.x, y1 = f.y, x2 = f.x + f.w, y2 = f.y + f.h;
      const others = faces.filter((o) => o !== f);
      const spot = [[x1, y1 - h - gap], [x2 - w, y1 - h - gap], [x1, y2 + gap], [x2 - w, y2 + gap], [x1, y1],
        [x2 + gap, y1], [x1 - w - gap, y1], [x2 + gap, y2 - h], [x1 - w - gap, y2 - h]]
        .map(([x, y]) => ({ x: Math.min(Math.max(0, x), cssW - w), y: Math.min(Math.max(0, y), cssH - h), w, h }))
        .find((r) => r.x >= 0 && r.y >= 0 && !others.some((o) => hits(r, o)) && !placed.some((q) => hits(r, q)));
      if (spot) {
        placed.push(spot);
        drawTag(ctx, tag, spot, f.color, padX);
      } else {
        const number = String(legend.length + 1);
        legend.push({ text: `${number} ${tag}`, color: f.color });
        const nw = ctx.measureText(number).width + 2 * padX;
        drawTag(ctx, number, { x: x1 + gap, y: y1 + gap, w: nw, h }, f.color, padX);
      }
    }
    let y = cssH;
    for (const line of legend.reverse()) {
      y -= tagH;
      drawTag(ctx, line.text, { x: 0, y, w: ctx.measureText(line.text).width + 2 * padX, h: tagH }, line.color, padX);
    }
  }

  function drawTag(ctx, text, r, color, padX) {
    ctx.fillStyle = color;
    ctx.fillRect(r.x, r.y, r.w, r.h);
    ctx.fillStyle = "#111";
    ctx.fillText(text, r.x + padX, r.y + r.h / 2 + 0.5);
  }

  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      for (const node of els.results.children) if (node._card) draw(node._card);
    }, 120);
  });

  // ------------------------------------------------------------------ webcam
  async function setupCamera() {
    const ok = window.isSecureContext && navigator.mediaDevices &&
      typeof navigator.mediaDevices.getUserMedia === "function";
    if (!ok) return; // stays hidden: no camera API here (e.g. plain http on another host)
    try { // no camera at all: stay hidden (the kinds are listed even before permission is asked)
      const devices = await navigator.mediaDevices.enumerateDevices();
      if (!devices.some((d) => d.kind === "videoinput")) return;
    } catch { /* cannot tell: offer the button, a failure is reported when it is used */ }
    els.camera.hidden = false;
    els.camStart.addEventListener("click", startCamera);
    els.camStop.addEventListener("click", stopCamera);
    els.camSnap.addEventListener("click", snapshot);
  }

  async function startCamera() {
    els.camError.hidden = true;
    try {
      cameraStream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 } }, audio: false });
      els.video.srcObject = cameraStream;
      els.camLive.hidden = false;
      els.camStart.hidden = true;
      els.camSnap.focus();
    } catch (err) {
      els.camError.textContent = err && err.name === "NotAllowedError"
        ? "Webcam access was denied."
        : `No webcam available${err && err.message ? ` (${err.message})` : ""}.`;
      els.camError.hidden = false;
    }
  }

  function stopCamera() {
    if (cameraStream) cameraStream.getTracks().forEach((t) => t.stop());
    cameraStream = null;
    els.video.srcObject = null;
    els.camLive.hidden = true;
    els.camStart.hidden = false;
  }

  function snapshot() {
    const v = els.video;
    if (!v.videoWidth) return;
    const c = document.createElement("canvas");
    c.width = v.videoWidth;
    c.height = v.videoHeight;
    c.getContext("2d").drawImage(v, 0, 0);
    c.toBlob((blob) => {
      if (!blob) return;
      const stamp = new Date().toISOString().replace(/[:.]/g, "-");
      handleFiles([new File([blob], `webcam-${stamp}.jpg`, { type: "image/jpeg" })]);
    }, "image/jpeg", 0.92);
  }

  setupCamera();
  loadInfo();
})();
