// Canvas drawing for the kfusion-live page: the 68 iBUG landmarks as a face, and a mouth-opening trace.
'use strict';

const KfusionDraw = (() => {
  const CANONICAL_SIZE_PX = 256; // landmarks live in a 256x256 aligned face crop, x right, y down
  const N_POINTS = 68;
  const MIN_SPARK_SPAN_PX = 4; // inner-lip gap span the trace shows at least, canonical px
  // iBUG-68 groups: [first, last, closed]
  const GROUPS = {
    jaw: [0, 16, false], browR: [17, 21, false], browL: [22, 26, false], noseBridge: [27, 30, false],
    noseBase: [31, 35, false], eyeR: [36, 41, true], eyeL: [42, 47, true], lipsOuter: [48, 59, true],
    lipsInner: [60, 67, true],
  };

  function groupPath(ctx, p, [a, b, closed], map) {
    ctx.beginPath();
    for (let i = a; i <= b; i++) {
      const [x, y] = map(p[2 * i], p[2 * i + 1]);
      if (i === a) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    }
    if (closed) ctx.closePath();
  }

  function face(cv, p, idleText) {
    const dpr = window.devicePixelRatio || 1;
    const size = Math.round(cv.clientWidth * dpr) || cv.width;
    if (cv.width !== size) { cv.width = size; cv.height = size; }
    const ctx = cv.getContext('2d');
    const w = cv.width;
    ctx.clearRect(0, 0, w, w);
    // faint grid of the canonical 256 px frame
    const sc = w / CANONICAL_SIZE_PX;
    ctx.strokeStyle = 'rgba(255,255,255,0.04)';
    ctx.lineWidth = 1;
    for (let g = 32; g < CANONICAL_SIZE_PX; g += 32) {
      ctx.beginPath(); ctx.moveTo(g * sc, 0); ctx.lineTo(g * sc, w); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(0, g * sc); ctx.lineTo(w, g * sc); ctx.stroke();
    }
    if (!p) {
      ctx.fillStyle = '#8b95a3';
      ctx.font = `${14 * dpr}px system-ui, sans-serif`;
      ctx.textAlign = 'center';
      ctx.fillText(idleText, w / 2, w / 2);
      return;
    }
    const map = (x, y) => [x * sc, y * sc];
    // skin silhouette: jaw plus brows closing over the forehead
    ctx.beginPath();
    for (let i = 0; i <= 16; i++) {
      const [x, y] = map(p[2 * i], p[2 * i + 1]);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    }
    for (let i = 26; i >= 17; i--) {
      const [x, y] = map(p[2 * i], p[2 * i + 1] - 6);
      ctx.lineTo(x, y);
    }
    ctx.closePath();
    const grad = ctx.createRadialGradient(w * 0.5, w * 0.45, w * 0.05, w * 0.5, w * 0.5, w * 0.45);
    grad.addColorStop(0, 'rgba(79,209,197,0.16)');
    grad.addColorStop(1, 'rgba(79,209,197,0.03)');
    ctx.fillStyle = grad;
    ctx.fill();
    ctx.lineJoin = 'round';
    ctx.lineCap = 'round';
    // mouth interior, then lips
    groupPath(ctx, p, GROUPS.lipsInner, map);
    ctx.fillStyle = '#2a0f14';
    ctx.fill();
    groupPath(ctx, p, GROUPS.lipsOuter, map);
    ctx.fillStyle = 'rgba(240,110,120,0.25)';
    ctx.fill();
    ctx.lineWidth = 2.2 * dpr;
    ctx.strokeStyle = '#f08080';
    ctx.stroke();
    groupPath(ctx, p, GROUPS.lipsInner, map);
    ctx.lineWidth = 1.6 * dpr;
    ctx.strokeStyle = '#ffb3b3';
    ctx.stroke();
    // eyes
    for (const g of [GROUPS.eyeR, GROUPS.eyeL]) {
      groupPath(ctx, p, g, map);
      ctx.fillStyle = 'rgba(230,233,238,0.85)';
      ctx.fill();
      ctx.lineWidth = 1.6 * dpr;
      ctx.strokeStyle = '#e6e9ee';
      ctx.stroke();
    }
    // jaw, brows, nose
    ctx.strokeStyle = '#4fd1c5';
    ctx.lineWidth = 2 * dpr;
    for (const g of [GROUPS.jaw, GROUPS.browR, GROUPS.browL, GROUPS.noseBridge, GROUPS.noseBase]) {
      groupPath(ctx, p, g, map);
      ctx.stroke();
    }
    // the 68 points
    ctx.fillStyle = '#ffffff';
    for (let i = 0; i < N_POINTS; i++) {
      const [x, y] = map(p[2 * i], p[2 * i + 1]);
      ctx.beginPath();
      ctx.arc(x, y, 1.6 * dpr, 0, 2 * Math.PI);
      ctx.fill();
    }
  }

  function spark(cv, gaps, seconds) {
    const dpr = window.devicePixelRatio || 1;
    const wpx = Math.round(cv.clientWidth * dpr) || cv.width;
    if (cv.width !== wpx) { cv.width = wpx; cv.height = Math.round(80 * dpr); }
    const ctx = cv.getContext('2d');
    const { width: w, height: h } = cv;
    ctx.clearRect(0, 0, w, h);
    if (gaps.length < 2) return;
    const now = performance.now();
    // auto-scaled to the recent range, never finer than MIN_SPARK_SPAN_PX
    let lo = Math.min(...gaps.map((g) => g[1]));
    let hi = Math.max(...gaps.map((g) => g[1]));
    if (hi - lo < MIN_SPARK_SPAN_PX) {
      const mid = (hi + lo) / 2;
      lo = mid - MIN_SPARK_SPAN_PX / 2;
      hi = mid + MIN_SPARK_SPAN_PX / 2;
    }
    ctx.beginPath();
    gaps.forEach(([t, g], i) => {
      const x = w - ((now - t) / (seconds * 1000)) * w;
      const y = h - 4 - ((g - lo) / (hi - lo)) * (h - 8);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.strokeStyle = '#f08080';
    ctx.lineWidth = 1.5 * dpr;
    ctx.stroke();
  }

  return { face, spark, GROUPS };
})();
