// kfusion-live browser client: microphone -> 16 kHz PCM over the websocket (docs/protocol.md) -> live
// 68-point landmarks on a canvas, with frame counter and latency. Plain JS, no build step.
'use strict';

const SAMPLE_RATE_HZ = 16000;
const CHUNK_MS_DEFAULT = 20; // audio per message; ?chunkMs=40 halves the messages (docs/scaling.md)
const CHUNK_MS_RANGE = [10, 200];
const PROTOCOL_VERSION = 1;
const FRAME_MAGIC = 'KFLM';
const FRAME_HEADER_BYTES = 40;
const N_POINTS = 68;
const LATENCY_WINDOW = 300; // frames in the rolling latency percentiles
const SPARK_SECONDS = 5;
const TRACK_MAX_FRAMES = 9000; // per-frame inner-lip gaps kept for kfusion.track() (5 min at 30 fps)
const RETRY_WAITS_S = [1, 2, 4]; // a server that is full or busy (close 1013 before ready): try again after these
const CLOSE_TRY_AGAIN = 1013;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

function chunkMs() {
  const text = params.get('chunkMs');
  const v = text === null ? CHUNK_MS_DEFAULT : Number(text);
  if (!Number.isInteger(v) || v < CHUNK_MS_RANGE[0] || v > CHUNK_MS_RANGE[1]) {
    throw new Error(`chunkMs must be a whole number of ms in [${CHUNK_MS_RANGE[0]}, ${CHUNK_MS_RANGE[1]}], got '${text}'`);
  }
  return v;
}

const S = {
  phase: 'idle', // idle | starting | waiting (to try a full server again) | live | ending | closed | error
  retries: 0, // automatic tries since the user pressed start
  retryTimer: null,
  error: null,
  ws: null,
  ready: null,
  audio: null, // {ctx, media, node, src}
  sendTimes: new Map(), // audio message seq -> performance.now() when sent
  seq: 0,
  chunkMs: CHUNK_MS_DEFAULT, // audio per message, ms (?chunkMs=)
  droppedBeforeReady: 0,
  frames: 0,
  lastIndex: -1,
  lastTime: 0,
  landmarks: null, // Float32Array(136)
  latencies: [], // ms, end to end
  serverMs: [], // ms, server share (sent - recv)
  arrivals: [], // performance.now() of recent frames, for the frame rate
  gaps: [], // [t_ms, inner-lip gap px]
  track: [], // [frame index, inner-lip gap px] since start
  level: 0,
  endInfo: null,
};

function setStatus(text, kind) {
  const el = $('status');
  el.textContent = text;
  el.className = `status ${kind || ''}`;
}

function fail(message) {
  S.error = message;
  S.phase = 'error';
  setStatus(message, 'error');
  console.error('kfusion:', message);
  teardown();
}

function percentile(values, p) {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

function pushWindow(arr, v, n) {
  arr.push(v);
  if (arr.length > n) arr.splice(0, arr.length - n);
}

function innerLipGap(p) {
  // mean vertical opening: points 61-63 (upper inner lip) vs 67-65 (lower)
  return ((p[67 * 2 + 1] - p[61 * 2 + 1]) + (p[66 * 2 + 1] - p[62 * 2 + 1]) + (p[65 * 2 + 1] - p[63 * 2 + 1])) / 3;
}

// --- frames in -----------------------------------------------------------------------------------
function parseBinaryFrame(buf) {
  const dv = new DataView(buf);
  if (buf.byteLength < FRAME_HEADER_BYTES) throw new Error(`frame of ${buf.byteLength} bytes is too short`);
  const magic = String.fromCharCode(dv.getUint8(0), dv.getUint8(1), dv.getUint8(2), dv.getUint8(3));
  if (magic !== FRAME_MAGIC || dv.getUint8(4) !== PROTOCOL_VERSION) throw new Error(`bad frame header ${magic}`);
  return {
    index: dv.getUint32(8, true), chunk: dv.getUint32(12, true), time: dv.getFloat64(16, true),
    recv: dv.getFloat64(24, true), sent: dv.getFloat64(32, true),
    landmarks: new Float32Array(buf, FRAME_HEADER_BYTES, N_POINTS * 2),
  };
}

function onFrame(f) {
  const now = performance.now();
  S.frames += 1;
  S.lastIndex = f.index;
  S.lastTime = f.time;
  S.landmarks = f.landmarks;
  const sentAt = S.sendTimes.get(f.chunk);
  if (sentAt !== undefined) pushWindow(S.latencies, now - sentAt, LATENCY_WINDOW);
  pushWindow(S.serverMs, (f.sent - f.recv) * 1000, LATENCY_WINDOW);
  pushWindow(S.arrivals, now, 90);
  const gap = innerLipGap(f.landmarks);
  S.gaps.push([now, gap]);
  pushWindow(S.track, [f.index, gap], TRACK_MAX_FRAMES);
  while (S.gaps.length && now - S.gaps[0][0] > SPARK_SECONDS * 1000) S.gaps.shift();
  for (const k of S.sendTimes.keys()) {
    if (k >= f.chunk - 100) break;
    S.sendTimes.delete(k);
  }
}

function onText(text) {
  let msg;
  try {
    msg = JSON.parse(text);
  } catch (e) {
    fail(`server sent bad JSON: ${e.message}`);
    return;
  }
  if (msg.type === 'ready') {
    S.ready = msg;
    S.phase = 'live';
    setStatus(`live · ${msg.source === 'mic' ? "server's microphone" : 'browser microphone'}`, 'live');
    $('lookahead').textContent = `${Number(msg.latency_ms).toFixed(0)} ms`;
    $('model').textContent = (msg.model && msg.model.version) || '?';
  } else if (msg.type === 'frame') {
    const lm = new Float32Array(N_POINTS * 2);
    msg.landmarks.forEach(([x, y], i) => { lm[2 * i] = x; lm[2 * i + 1] = y; });
    onFrame({ index: msg.index, chunk: msg.chunk, time: msg.time, recv: msg.recv, sent: msg.sent, landmarks: lm });
  } else if (msg.type === 'error') {
    fail(`server error ${msg.code}: ${msg.reason}`);
  } else if (msg.type === 'end') {
    S.endInfo = msg;
    S.phase = 'closed';
    setStatus(`ended · ${msg.frames} frames, ${msg.dropped} dropped`, '');
  }
}

// --- audio out -----------------------------------------------------------------------------------
async function startAudio() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error('no microphone API here: the page needs https or localhost');
  }
  const media = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  let ctx;
  try {
    // ?ctxRate=48000 forces another context rate (the worklet then resamples to 16 kHz)
    const rate = Number(params.get('ctxRate') || SAMPLE_RATE_HZ);
    ctx = new AudioContext({ sampleRate: rate, latencyHint: 'interactive' });
  } catch (e) {
    ctx = new AudioContext({ latencyHint: 'interactive' }); // the worklet resamples to 16 kHz
  }
  await ctx.audioWorklet.addModule('pcm-worklet.js');
  const src = ctx.createMediaStreamSource(media);
  const node = new AudioWorkletNode(ctx, 'pcm-chunker', {
    numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1, channelCountMode: 'explicit',
    processorOptions: { chunkSamples: (SAMPLE_RATE_HZ * S.chunkMs) / 1000 },
  });
  node.port.onmessage = (e) => sendChunk(e.data.pcm, e.data.rms);
  src.connect(node);
  if (ctx.state !== 'running') await ctx.resume();
  $('ctxRate').textContent = `${ctx.sampleRate / 1000} kHz`;
  S.audio = { ctx, media, node, src };
}

function sendChunk(pcm, rms) {
  S.level = rms;
  const ws = S.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN || S.phase !== 'live') {
    S.droppedBeforeReady += 1;
    return;
  }
  S.sendTimes.set(S.seq, performance.now());
  S.seq += 1;
  ws.send(pcm);
}

function stopAudio() {
  const a = S.audio;
  S.audio = null;
  if (!a) return;
  a.node.port.postMessage('stop');
  a.src.disconnect();
  a.media.getTracks().forEach((t) => t.stop());
  a.ctx.close();
}

// --- session -------------------------------------------------------------------------------------
function openSocket(first) {
  return new Promise((resolve, reject) => {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/ws`);
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      ws.send(JSON.stringify(first));
      resolve(ws);
    };
    ws.onerror = () => reject(new Error(`cannot reach the server at ${ws.url}`));
    ws.onmessage = (e) => {
      if (typeof e.data === 'string') {
        onText(e.data);
        return;
      }
      try {
        onFrame(parseBinaryFrame(e.data));
      } catch (err) {
        fail(err.message);
      }
    };
    ws.onclose = (e) => {
      if (e.code === CLOSE_TRY_AGAIN && S.phase === 'starting' && !S.ready && S.retries < RETRY_WAITS_S.length) {
        const wait = RETRY_WAITS_S[S.retries];
        S.retries += 1;
        S.phase = 'waiting';
        setStatus(`server full or busy (${e.reason || 'try again later'}); trying again in ${wait} s`, '');
        teardown();
        $('startBtn').disabled = true; // stop cancels the wait
        $('stopBtn').disabled = false;
        S.retryTimer = setTimeout(() => start(true), wait * 1000);
        return;
      }
      if (S.phase === 'live' || S.phase === 'starting') {
        if (e.code === 1000) setStatus('closed by the server', '');
        else fail(`connection closed (${e.code}${e.reason ? `: ${e.reason}` : ''})`);
      }
      if (S.phase !== 'error') S.phase = 'closed';
      teardown();
    };
  });
}

async function start(retry = false) {
  if (S.phase === 'starting' || S.phase === 'live') return;
  clearTimeout(S.retryTimer);
  if (retry !== true) S.retries = 0; // a click (an Event) or kfusion.start() starts the count again
  Object.assign(S, {
    phase: 'starting', error: null, ready: null, seq: 0, frames: 0, lastIndex: -1, droppedBeforeReady: 0,
    endInfo: null, landmarks: null,
  });
  S.sendTimes.clear();
  S.latencies.length = 0;
  S.serverMs.length = 0;
  S.gaps.length = 0;
  S.track.length = 0;
  setStatus('starting…', '');
  $('startBtn').disabled = true;
  $('stopBtn').disabled = false;
  const source = $('source').value;
  const token = params.get('token') || undefined;
  const output = params.get('output') === 'json' ? 'json' : 'binary';
  try {
    S.chunkMs = chunkMs();
    if (source === 'server') {
      S.ws = await openSocket({ type: 'subscribe', version: PROTOCOL_VERSION, output, token });
    } else {
      await startAudio();
      S.ws = await openSocket({
        type: 'start', version: PROTOCOL_VERSION, sample_rate: SAMPLE_RATE_HZ, format: 'pcm16', channels: 1,
        fps: Number(params.get('fps') || 30), output, token,
      });
    }
  } catch (err) {
    fail(err.message || String(err));
  }
}

function stop() {
  const ws = S.ws;
  clearTimeout(S.retryTimer);
  if (ws && ws.readyState === WebSocket.OPEN && S.phase === 'live' && $('source').value === 'browser') {
    S.phase = 'ending';
    setStatus('finishing…', '');
    stopAudio();
    ws.send(JSON.stringify({ type: 'end', version: PROTOCOL_VERSION })); // server sends the rest, then closes
  } else {
    if (ws) ws.close(1000);
    S.phase = 'closed';
    setStatus('stopped', '');
    teardown();
  }
}

function teardown() {
  stopAudio();
  $('startBtn').disabled = false;
  $('stopBtn').disabled = true;
}

function fmtMs(v) {
  return Number.isFinite(v) ? `${v.toFixed(v < 10 ? 1 : 0)} ms` : '–';
}

function frameRate() {
  const a = S.arrivals;
  if (a.length < 2 || performance.now() - a[a.length - 1] > 1000) return NaN;
  return ((a.length - 1) * 1000) / (a[a.length - 1] - a[0]);
}

function render() {
  const idle = S.phase === 'error' ? 'stopped: see the status above' : 'press Start and speak';
  KfusionDraw.face($('face'), S.landmarks, idle);
  KfusionDraw.spark($('spark'), S.gaps, SPARK_SECONDS);
  $('frames').textContent = String(S.frames);
  const fps = frameRate();
  $('fps').textContent = Number.isFinite(fps) ? `${fps.toFixed(1)} /s` : '–';
  $('latP50').textContent = fmtMs(percentile(S.latencies, 50));
  $('latP95').textContent = fmtMs(percentile(S.latencies, 95));
  $('srvP50').textContent = fmtMs(percentile(S.serverMs, 50));
  $('frameIndex').textContent = S.lastIndex >= 0 ? `frame ${S.lastIndex}` : 'frame –';
  $('audioTime').textContent = `${S.lastTime.toFixed(2)} s`;
  $('level').style.width = `${Math.min(100, Math.sqrt(S.level) * 180)}%`;
  requestAnimationFrame(render);
}

// --- page API for tests and embedding -------------------------------------------------------------
window.kfusion = {
  start, stop,
  track: () => S.track.slice(), // [[frame index, inner-lip gap px], ...] since start
  stats() {
    const gaps = S.gaps.map((g) => g[1]);
    return {
      phase: S.phase, error: S.error, ready: S.ready, end: S.endInfo, frames: S.frames, lastIndex: S.lastIndex,
      chunksSent: S.seq, chunkMs: S.chunkMs, droppedBeforeReady: S.droppedBeforeReady,
      contextRateHz: S.audio ? S.audio.ctx.sampleRate : null,
      latencyP50Ms: percentile(S.latencies, 50), latencyP95Ms: percentile(S.latencies, 95),
      serverP50Ms: percentile(S.serverMs, 50), frameRate: frameRate(),
      gapMin: gaps.length ? Math.min(...gaps) : null, gapMax: gaps.length ? Math.max(...gaps) : null,
    };
  },
};

$('startBtn').addEventListener('click', start);
$('stopBtn').addEventListener('click', stop);
if (params.get('source') === 'server') $('source').value = 'server';
requestAnimationFrame(render);
if (params.get('autostart') === '1') start();
