// AudioWorklet: microphone samples at the context rate -> 16 kHz mono int16 chunks posted to the page.
// When the context does not run at 16 kHz, a windowed-sinc low-pass plus linear interpolation resamples.
'use strict';

const TARGET_RATE_HZ = 16000;
const FIR_TAPS_PER_RATIO = 16; // low-pass length per unit of decimation ratio

function lowPassTaps(ratio) {
  // Windowed-sinc (Blackman) low-pass at 0.45 of the output rate, in units of the input rate.
  const cutoff = 0.45 / ratio;
  const n = Math.max(15, Math.ceil(FIR_TAPS_PER_RATIO * ratio) | 1);
  const taps = new Float32Array(n);
  const mid = (n - 1) / 2;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const x = i - mid;
    const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
    const w = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (n - 1)) + 0.08 * Math.cos((4 * Math.PI * i) / (n - 1));
    taps[i] = sinc * w;
    sum += taps[i];
  }
  for (let i = 0; i < n; i++) taps[i] /= sum;
  return taps;
}

class PcmChunker extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.chunkSamples = opts.chunkSamples || 320; // 20 ms at 16 kHz
    this.ratio = sampleRate / TARGET_RATE_HZ; // input samples per output sample
    this.passThrough = Math.abs(this.ratio - 1) < 1e-9;
    this.taps = this.ratio > 1 ? lowPassTaps(this.ratio) : null;
    this.hist = this.taps ? new Float32Array(this.taps.length * 2) : null; // doubled ring: no wrap in the dot
    this.histPos = 0;
    this.phase = 0; // next output position, in input samples after `prev`
    this.prev = 0;
    this.out = new Int16Array(this.chunkSamples);
    this.n = 0;
    this.sumSq = 0;
    this.running = true;
    this.port.onmessage = (e) => {
      if (e.data === 'stop') this.running = false;
    };
  }

  filter(v) {
    if (!this.taps) return v;
    const n = this.taps.length;
    this.hist[this.histPos] = v;
    this.hist[this.histPos + n] = v;
    this.histPos = (this.histPos + 1) % n;
    let acc = 0;
    for (let i = 0; i < n; i++) acc += this.taps[i] * this.hist[this.histPos + i];
    return acc;
  }

  emit(v) {
    const c = v > 1 ? 1 : v < -1 ? -1 : v;
    this.out[this.n++] = Math.round(c * 32767);
    this.sumSq += c * c;
    if (this.n === this.chunkSamples) {
      const rms = Math.sqrt(this.sumSq / this.n);
      this.port.postMessage({ pcm: this.out.buffer, rms }, [this.out.buffer]);
      this.out = new Int16Array(this.chunkSamples);
      this.n = 0;
      this.sumSq = 0;
    }
  }

  process(inputs) {
    if (!this.running) return false;
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const frames = input[0].length;
    const nch = input.length;
    for (let k = 0; k < frames; k++) {
      let v = input[0][k];
      for (let c = 1; c < nch; c++) v += input[c][k];
      if (nch > 1) v /= nch;
      if (this.passThrough) {
        this.emit(v);
        continue;
      }
      const cur = this.filter(v);
      while (this.phase < 1) {
        this.emit(this.prev + (cur - this.prev) * this.phase);
        this.phase += this.ratio;
      }
      this.phase -= 1;
      this.prev = cur;
    }
    return true;
  }
}

registerProcessor('pcm-chunker', PcmChunker);
