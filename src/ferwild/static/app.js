// ferwild web page: upload images (or a webcam snapshot) to POST /predict and draw the results;
// or stream the webcam to the /ws/live WebSocket and draw each answer over the video (Live).
// No framework, no external resources. Every string that comes from the server or from a file
// name is put into the page with textContent / canvas fillText, never parsed as HTML.
"use strict";

// Pure geometry, no DOM: also loaded by the tests under node (module.exports below).
const ferwildOverlay = (() => {
  const overlaps = (a, b) => a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];

  // Where each face's label tag goes: ferwild.drawing.place_tags, step for step, so that the
  // page and the annotated files agree. boxes: [x1, y1, x2, y2]; sizes: [w, h]. Answers, per
  // face, [x1, y1, x2, y2] inside the image covering no other face's box and no tag placed
  // before it, or null when no spot is free (the caller numbers the face and adds a legend line).
  // Spots: above the box (left-, then right-aligned), below it, inside its top edge, to its
  // right, to its left; each clamped into the image.
  function placeTags(boxes, sizes, width, height, gap = 1) {
    const placed = [];
    return boxes.map(([x1, y1, x2, y2], i) => {
      const [w, h] = sizes[i];
      const others = boxes.filter((_, j) => j !== i);
      const candidates = [[x1, y1 - h - gap], [x2 - w, y1 - h - gap], [x1, y2 + gap], [x2 - w, y2 + gap],
        [x1, y1], [x2 + gap, y1], [x1 - w - gap, y1], [x2 + gap, y2 - h], [x1 - w - gap, y2 - h]];
      for (const [x, y] of candidates) {
        const cx = Math.min(Math.max(0, x), width - w);
        const cy = Math.min(Math.max(0, y), height - h);
        if (cx < 0 || cy < 0) continue; // the tag is larger than the image
        const rect = [cx, cy, cx + w, cy + h];
        if (!others.some((b) => overlaps(rect, b)) && !placed.some((t) => overlaps(rect, t))) {
          placed.push(rect);
          return rect;
        }
      }
      return null;
    });
  }

  // The order faces are numbered in on a photo: left to right by the centre of their box (then
  // top to bottom); faces without a box come last, in the server's order. Answers the indices of
  // `faces` in that order.
  function readingOrder(faces) {
    const key = (f) => (Array.isArray(f && f.box) && f.box.length === 4
      ? [(Number(f.box[0]) + Number(f.box[2])) / 2, (Number(f.box[1]) + Number(f.box[3])) / 2] : null);
    return faces.map((f, i) => ({ i, k: key(f) })).sort((a, b) => {
      if (!a.k || !b.k) return (a.k ? 0 : 1) - (b.k ? 0 : 1) || a.i - b.i;
      return a.k[0] - b.k[0] || a.k[1] - b.k[1] || a.i - b.i;
    }).map((e) => e.i);
  }

  // Each face's number, as shown in the list and on its tag: a person's track + 1 when every face
  // has a track (live video: a person keeps their number from frame to frame), else the place of
  // the face in readingOrder (photos: 1 is the left-most face).
  function faceNumbers(faces) {
    if (faces.length && faces.every((f) => f && Number.isInteger(f.track))) return faces.map((f) => f.track + 1);
    const numbers = new Array(faces.length);
    readingOrder(faces).forEach((i, rank) => { numbers[i] = rank + 1; });
    return numbers;
  }

  return { placeTags, readingOrder, faceNumbers };
})();

if (typeof module !== "undefined" && module.exports) module.exports = ferwildOverlay;

if (typeof document !== "undefined") (() => {
  const $ = (id) => document.getElementById(id);
  const els = {
    info: $("model-info"), hint: $("limits-hint"), drop: $("drop-zone"), pick: $("pick"),
    input: $("file-input"), status: $("status"), results: $("results"), clear: $("clear"),
    camera: $("camera"), camStart: $("camera-start"), camLive: $("camera-live"),
    video: $("camera-video"), camSnap: $("camera-snap"), camStop: $("camera-stop"),
    camError: $("camera-error"), template: $("result-template"),
    liveToggle: $("live-toggle"), liveStage: $("live-stage"), liveVideo: $("live-video"),
    liveOverlay: $("live-overlay"), liveStats: $("live-stats"), liveFaces: $("live-faces"),
    liveError: $("live-error"), live: $("live"), liveHead: $("live-head"), liveDetector: $("live-detector"),
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
      // the live mode's own reader: its detector decides which faces the video shows
      if (info.live_detector || info.live_model) {
        const live = [];
        if (info.live_detector) live.push(["face detector ", String(info.live_detector)]);
        if (info.live_model) live.push(["model ", String(info.live_model)]);
        els.liveDetector.replaceChildren("Live mode reads with: ");
        live.forEach(([what, name], i) => els.liveDetector.append(i ? " · " : "", what, el("span", "nowrap", name)));
        els.liveDetector.setAttribute("data-detector", String(info.live_detector ?? ""));
      }
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
    // faces are numbered left to right (ferwildOverlay.readingOrder); the list follows that order
    // and each tag on the photo carries the same number
    const numbers = ferwildOverlay.faceNumbers(faces);
    const order = ferwildOverlay.readingOrder(faces);
    const summary = order.map((i) => `face ${numbers[i]} ${faces[i].label} ${pct(faces[i].confidence)}`).join(", ");
    card.canvas.setAttribute("aria-label",
      `${card.name}: ${faces.length ? `${summary} (numbered from left to right)` : "no face found"}`);

    const list = card.node.querySelector(".faces");
    list.replaceChildren();
    if (!faces.length) {
      const note = card.node.querySelector(".card-note");
      note.textContent = "No face found in this image.";
      note.hidden = false;
    }
    order.forEach((i) => list.append(faceItem(faces[i], numbers[i])));
    draw(card);
  }

  function faceItem(face, n) {
    const color = numberColor(n);
    const item = el("li", "face");
    item.setAttribute("data-face", String(n));
    const head = el("div", "face-head");
    const swatch = el("span", "swatch");
    swatch.style.backgroundColor = color;
    swatch.setAttribute("aria-hidden", "true");
    head.append(swatch, el("span", "face-title", `Face #${n}`),
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
    chart.setAttribute("aria-label", `Face ${n} probabilities`);
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
    drawFaces(ctx, result, cssW, cssH, imgW, imgH);
  }

  // A face's colour follows its number (ferwildOverlay.faceNumbers): a person keeps their colour
  // from frame to frame in live video; on a photo the box, its tag and its row in the list match.
  const numberColor = (n) => COLORS[(Math.max(1, n) - 1) % COLORS.length];

  // The tag text: the smoothed reading when there is one (live video), else the frame's own.
  function tagText(face) {
    const smoothed = face.smoothed && typeof face.smoothed === "object" ? face.smoothed : null;
    if (smoothed && face.smoothed_label) {
      const values = Object.values(smoothed).map(Number);
      const p = face.smoothed_label in smoothed ? Number(smoothed[face.smoothed_label]) : Math.max(...values);
      return `${face.smoothed_label} ${pct(p)}`;
    }
    return `${face.label} ${pct(face.confidence)}`;
  }

  // Boxes and tags of a result drawn over a cssW x cssH picture of an imgW x imgH image.
  function drawFaces(ctx, result, cssW, cssH, imgW, imgH) {
    if (!result || result.error || !Array.isArray(result.faces)) return;
    // boxes are in the server's pixel coordinates of the (EXIF-rotated) image
    const sx = cssW / (result.width || imgW);
    const sy = cssH / (result.height || imgH);
    const font = Math.round(Math.min(16, Math.max(11, cssW / 40)));
    ctx.font = `600 ${font}px system-ui, -apple-system, "Segoe UI", sans-serif`;
    ctx.textBaseline = "middle";
    const numbers = ferwildOverlay.faceNumbers(result.faces);
    const faces = result.faces.map((face, i) => {
      if (!Array.isArray(face.box) || face.box.length !== 4) return null;
      const [x1, y1, x2, y2] = face.box.map(Number);
      const n = numbers[i];
      return { face, n, color: numberColor(n), x: x1 * sx, y: y1 * sy, w: (x2 - x1) * sx, h: (y2 - y1) * sy };
    }).filter(Boolean);
    const lw = Math.max(2, Math.min(4, cssW / 200));
    ctx.lineWidth = lw;
    for (const f of faces) { // all boxes first, so that no box is drawn over a tag
      ctx.strokeStyle = "rgba(0,0,0,0.55)";
      ctx.strokeRect(f.x - 1, f.y - 1, f.w + 2, f.h + 2);
      ctx.strokeStyle = f.color;
      ctx.strokeRect(f.x, f.y, f.w, f.h);
    }
    // The placement rule of ferwild.drawing.place_tags (annotated files use the same one); a
    // face whose tag fits nowhere gets its number alone and a legend line. Every tag starts with
    // the face's number: the one of its row in the list (photos) or of its person (live).
    const padX = 5, tagH = font + 8, gap = lw / 2;
    const tags = faces.map((f) => `#${f.n} ${tagText(f.face)}`);
    const spots = ferwildOverlay.placeTags(faces.map((f) => [f.x, f.y, f.x + f.w, f.y + f.h]),
      tags.map((t) => [ctx.measureText(t).width + 2 * padX, tagH]), cssW, cssH, gap);
    const legend = [];
    faces.forEach((f, i) => {
      const spot = spots[i];
      if (spot) {
        drawTag(ctx, tags[i], { x: spot[0], y: spot[1], w: spot[2] - spot[0], h: spot[3] - spot[1] }, f.color, padX);
      } else {
        const number = `#${f.n}`;
        legend.push({ text: tags[i], color: f.color });
        const nw = ctx.measureText(number).width + 2 * padX;
        drawTag(ctx, number, { x: f.x + gap, y: f.y + gap, w: nw, h: tagH }, f.color, padX);
      }
    });
    let y = cssH;
    for (const line of legend.sort((a, b) => b.text.localeCompare(a.text, undefined, { numeric: true }))) {
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
    if (live.running) stopLive(null); // one user of the camera at a time
    try {
      cameraStream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 } }, audio: false });
      els.video.srcObject = cameraStream;
      els.camLive.hidden = false;
      els.camStart.hidden = true;
      els.camSnap.focus();
    } catch (err) {
      els.camError.textContent = cameraErrorText(err);
      els.camError.hidden = false;
    }
  }

  // What went wrong with getUserMedia, in words a visitor can act on.
  function cameraErrorText(err) {
    const name = err && err.name;
    if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
      return "Camera access was denied. Allow the camera for this page in the browser's site settings, then try again.";
    }
    if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") {
      return "No camera found. Connect a webcam, then try again.";
    }
    if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") {
      return "The camera could not be started: another application may be using it.";
    }
    return `The camera could not be started${err && err.message ? ` (${err.message})` : ""}.`;
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

  // ------------------------------------------------------------------ live video
  // The webcam's frames go to /ws/live one at a time: a frame is captured and sent only when the
  // answer to the previous one has arrived, so a slow server (or network) makes the page skip
  // camera frames instead of queueing them and falling ever further behind. Each answer's boxes
  // and tags are drawn over the video on a transparent canvas.
  const LIVE_MAX_WIDTH = 640;   // frames are scaled down to this width before they are sent
  const LIVE_JPEG_QUALITY = 0.7;
  const LIVE_SLOW_MS = 5000;    // an answer this late is said to be late (the frame stays in flight)
  const live = {
    running: false, starting: false, ws: null, stream: null, opened: false,
    inFlight: false, hasUnsent: false, sentAt: 0, skipped: 0, analysed: 0, replies: [], cameraFrames: [],
    result: null, frameCallback: 0, raf: 0, lastVideoTime: -1, canvas: null, placed: false,
  };
  // Keeps the timestamps of the last second in `list` (for a rate per second).
  const lastSecond = (list, now) => {
    list.push(now);
    while (now - list[0] > 1000) list.shift();
    const span = now - list[0];
    return list.length > 1 && span > 0 ? ((list.length - 1) * 1000) / span : 0;
  };

  function setupLive() {
    els.liveToggle.addEventListener("click", () => (live.running ? stopLive(null) : startLive()));
    window.addEventListener("resize", () => { fitLive(); drawLive(); });
    els.liveVideo.addEventListener("loadedmetadata", () => {
      fitLive();
      if (!live.placed) { live.placed = true; showLive(); }
    });
    window.addEventListener("pagehide", () => stopLive(null));
  }

  function liveError(text) {
    els.liveError.textContent = text;
    els.liveError.hidden = !text;
  }

  async function startLive() {
    if (live.starting) return;
    liveError("");
    if (!window.isSecureContext || !navigator.mediaDevices || typeof navigator.mediaDevices.getUserMedia !== "function") {
      liveError("Live mode needs the camera, which browsers only allow on a secure page: open this page over " +
        "https://, or as http://localhost on the machine that runs the server.");
      return;
    }
    live.starting = true;
    els.liveToggle.disabled = true;
    stopCamera(); // the snapshot preview: one user of the camera at a time
    try {
      live.stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: LIVE_MAX_WIDTH } }, audio: false });
    } catch (err) {
      liveError(cameraErrorText(err));
      live.starting = false;
      els.liveToggle.disabled = false;
      return;
    }
    const stream = live.stream;
    // a camera that goes away (unplugged, taken by another application) ends its track
    stream.getTracks().forEach((t) => t.addEventListener?.("ended", () => {
      if (live.stream === stream) stopLive("The camera stopped (unplugged, or taken by another application).");
    }));
    els.liveVideo.srcObject = stream;
    els.liveStage.hidden = false;
    els.liveStats.hidden = false;
    els.liveStats.textContent = "Connecting…";
    els.liveStats.removeAttribute?.("title");
    Object.assign(live, { running: true, starting: false, opened: false, inFlight: false, hasUnsent: false,
      skipped: 0, analysed: 0, replies: [], cameraFrames: [], result: null, lastVideoTime: -1, placed: false });
    fitLive();
    els.liveToggle.textContent = "Stop live";
    els.liveToggle.setAttribute("aria-pressed", "true");
    els.liveToggle.disabled = false;
    openSocket();
    watchCameraFrames();
  }

  // The height of one line of the live figures, in CSS pixels.
  const statsLine = () => (typeof getComputedStyle === "function"
    && parseFloat(getComputedStyle(els.liveStats).lineHeight)) || 20;

  // The video is sized so that the Live heading (with its Stop button), the video and the line of
  // figures under it fit in the window together (at most 640 px wide, the width of the frames).
  function fitLive() {
    if (els.liveStage.hidden) return;
    const v = els.liveVideo;
    const aspect = v.videoWidth && v.videoHeight ? v.videoWidth / v.videoHeight : 4 / 3;
    const width = els.live.clientWidth || LIVE_MAX_WIDTH;
    const head = els.liveHead.getBoundingClientRect().height || 0;
    const below = 3 * statsLine() + 24; // the figures (up to three lines on a phone) and the gaps
    const room = (window.innerHeight || 800) - head - below;
    els.liveStage.style.width = `${Math.floor(Math.max(160, Math.min(LIVE_MAX_WIDTH, width, room * aspect)))}px`;
  }

  // Brings the Live heading, the video and its figures into view (once per start: the visitor may
  // scroll away after that), with room for the figures to grow to three lines.
  function showLive() {
    const top = els.live.getBoundingClientRect().top;
    const statsTop = els.liveStats.getBoundingClientRect().top;
    if (top < 0 || statsTop + 3 * statsLine() > window.innerHeight) {
      window.scrollTo({ top: Math.max(0, window.scrollY + top - 8), behavior: "instant" });
    }
  }

  function openSocket() {
    const url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws/live`;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      stopLive(`Could not open the live connection (${err.message}).`);
      return;
    }
    live.ws = ws;
    ws.addEventListener("open", () => {
      if (live.ws !== ws) return;
      live.opened = true;
      els.liveStats.textContent = "Connected; waiting for the camera…";
      if (live.hasUnsent) sendFrame();
    });
    ws.addEventListener("message", (ev) => { if (live.ws === ws) onLiveAnswer(ev.data); });
    // "error" carries no reason; "close" always follows it, with a code
    ws.addEventListener("close", (ev) => {
      if (live.ws !== ws) return; // closed by stopLive: nothing to report
      const why = ev.code === 1009 ? "the server refused a frame as too large" : "by the server or the network";
      stopLive(live.opened
        ? `The live connection was closed ${why} (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ""}). ` +
          "Press Start live to reconnect."
        : "Could not connect to the server's live endpoint (the WebSocket to /ws/live failed). " +
          "Is the server running, and does a proxy in between pass WebSockets?");
    });
  }

  // Counts the camera's frames: each one is sent if nothing is in flight, else it waits; a frame
  // still waiting when the next one arrives is skipped.
  function watchCameraFrames() {
    const v = els.liveVideo;
    if (typeof v.requestVideoFrameCallback === "function") {
      const onFrame = () => {
        if (!live.running) return;
        onCameraFrame();
        live.frameCallback = v.requestVideoFrameCallback(onFrame);
      };
      live.frameCallback = v.requestVideoFrameCallback(onFrame);
    } else { // no per-frame callback (older Firefox): a new currentTime is a new frame
      const poll = () => {
        if (!live.running) return;
        if (v.readyState >= 2 && v.currentTime !== live.lastVideoTime) {
          live.lastVideoTime = v.currentTime;
          onCameraFrame();
        }
        live.raf = requestAnimationFrame(poll);
      };
      live.raf = requestAnimationFrame(poll);
    }
  }

  function onCameraFrame() {
    live.cameraRate = lastSecond(live.cameraFrames, performance.now());
    if (live.hasUnsent && live.opened) live.skipped += 1; // not while connecting: nothing could go yet
    live.hasUnsent = true;
    if (!live.inFlight) {
      sendFrame();
    } else if (live.sentAt && performance.now() - live.sentAt > LIVE_SLOW_MS) {
      els.liveStats.textContent = `Waiting for the server: no answer for ${Math.round((performance.now() - live.sentAt) / 1000)} s…`;
    }
  }

  function sendFrame() {
    const v = els.liveVideo, ws = live.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !v.videoWidth || !v.videoHeight) return;
    live.inFlight = true;
    live.hasUnsent = false;
    const scale = Math.min(1, LIVE_MAX_WIDTH / v.videoWidth);
    const c = live.canvas || (live.canvas = document.createElement("canvas"));
    c.width = Math.max(1, Math.round(v.videoWidth * scale));
    c.height = Math.max(1, Math.round(v.videoHeight * scale));
    c.getContext("2d").drawImage(v, 0, 0, c.width, c.height);
    c.toBlob((blob) => {
      if (live.ws !== ws || ws.readyState !== WebSocket.OPEN) return;
      if (!blob) { // could not encode this frame: try the next one
        live.inFlight = false;
        return;
      }
      live.sentAt = performance.now();
      ws.send(blob);
    }, "image/jpeg", LIVE_JPEG_QUALITY);
  }

  function onLiveAnswer(data) {
    let answer = null;
    try { answer = JSON.parse(data); } catch { /* reported below */ }
    live.inFlight = false;
    const now = performance.now();
    const fps = lastSecond(live.replies, now); // answers of the last second
    if (!answer || typeof answer !== "object") {
      liveError("The server sent an answer this page cannot read.");
    } else {
      live.result = answer.error ? null : answer;
      liveError(answer.error ? `Frame ${answer.frame ?? "?"} could not be analysed: ${answer.error}` : "");
      const faces = live.result && Array.isArray(live.result.faces) ? live.result.faces : [];
      const numbers = ferwildOverlay.faceNumbers(faces);
      const order = faces.map((_, i) => i).sort((a, b) => numbers[a] - numbers[b]);
      els.liveFaces.hidden = false;
      els.liveFaces.setAttribute("data-faces", String(faces.length));
      els.liveFaces.textContent = faces.length
        ? `${plural(faces.length, "face")}: ` + order.map((i) => `person #${numbers[i]} ${tagText(faces[i])}`).join(" · ")
        : (answer.error ? "" : "No face in view.");
      live.analysed += 1;
      // rates of the last second: frames analysed out of the camera's frames (the others are
      // skipped: the page sends a frame only when the answer to the one before is back)
      const camera = Math.max(live.cameraRate || 0, fps);
      els.liveStats.textContent = [
        `analysed ${fps.toFixed(1)} of ${camera.toFixed(1)} camera frames/s`,
        `server ${Number(answer.server_ms || 0).toFixed(0)} ms`,
        `round trip ${Math.round(now - live.sentAt)} ms`,
      ].join(" · ");
      els.liveStats.setAttribute("title", `Since Start live: ${plural(live.analysed, "frame")} analysed, ` +
        `${plural(live.skipped, "camera frame")} skipped (a frame is sent only when the answer to the one ` +
        "before is back, so a slow server skips frames rather than lag behind)");
      drawLive();
    }
    if (live.hasUnsent) sendFrame(); // a newer camera frame is waiting: send it now
  }

  function drawLive() {
    const canvas = els.liveOverlay, v = els.liveVideo;
    const cssW = v.clientWidth, cssH = v.clientHeight;
    if (!cssW || !cssH) return;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
      canvas.width = Math.round(cssW * dpr);
      canvas.height = Math.round(cssH * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);
    if (live.result) drawFaces(ctx, live.result, cssW, cssH, v.videoWidth, v.videoHeight);
  }

  // Ends live mode (the camera, the connection, the overlay); `message` says why, when it was
  // not the visitor who stopped it.
  function stopLive(message) {
    const v = els.liveVideo;
    live.running = false;
    if (live.frameCallback && typeof v.cancelVideoFrameCallback === "function") v.cancelVideoFrameCallback(live.frameCallback);
    if (live.raf) cancelAnimationFrame(live.raf);
    live.frameCallback = live.raf = 0;
    const ws = live.ws;
    live.ws = null; // first: its close event is then not reported as a failure
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, "stopped");
    if (live.stream) live.stream.getTracks().forEach((t) => t.stop());
    live.stream = null;
    v.srcObject = null;
    live.result = null;
    live.inFlight = live.hasUnsent = false;
    els.liveStage.hidden = true;
    els.liveFaces.hidden = true;
    if (!message) els.liveStats.hidden = true;
    els.liveToggle.textContent = "Start live";
    els.liveToggle.setAttribute("aria-pressed", "false");
    liveError(message || "");
  }

  setupCamera();
  setupLive();
  loadInfo();
})();
