// A live line chart drawn by hand in SVG: a fixed window of samples, one
// polyline per series, a few horizontal grid lines with their values.
'use strict';

const RateChart = (() => {
  const NS = 'http://www.w3.org/2000/svg';
  const W = 800, H = 220, LEFT = 48, RIGHT = 8, TOP = 10, BOTTOM = 22;

  function el(name, attrs, text) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  /** A "nice" upper bound for the axis: 1, 2 or 5 times a power of ten. */
  function niceMax(v) {
    if (v <= 1) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function fmt(v) {
    return v >= 1000 ? `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)}k` : String(Math.round(v * 10) / 10);
  }

  class Chart {
    /** `series`: [{name, cls}]; keeps `capacity` samples. */
    constructor(container, series, capacity = 90, stepSeconds = 2) {
      this.container = container;
      this.series = series;
      this.capacity = capacity;
      this.step = stepSeconds;
      this.samples = []; // [[v0, v1, ...], ...]
      this.svg = el('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': 'message rate chart' });
      container.appendChild(this.svg);
      this.draw();
    }

    push(values) {
      this.samples.push(values);
      if (this.samples.length > this.capacity) this.samples.shift();
      this.draw();
    }

    draw() {
      const svg = this.svg;
      while (svg.firstChild) svg.removeChild(svg.firstChild);
      const max = niceMax(Math.max(0, ...this.samples.flat()));
      const plotW = W - LEFT - RIGHT, plotH = H - TOP - BOTTOM;
      const y = (v) => TOP + plotH - (v / max) * plotH;
      const x = (i) => LEFT + (i / Math.max(1, this.capacity - 1)) * plotW;
      for (let k = 0; k <= 4; k++) {
        const v = (max * k) / 4;
        svg.appendChild(el('line', { x1: LEFT, x2: W - RIGHT, y1: y(v), y2: y(v), class: 'grid' }));
        svg.appendChild(el('text', { x: LEFT - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis' }, fmt(v)));
      }
      const span = (this.capacity - 1) * this.step;
      svg.appendChild(el('text', { x: LEFT, y: H - 6, class: 'axis' }, `-${span}s`));
      svg.appendChild(el('text', { x: W - RIGHT, y: H - 6, 'text-anchor': 'end', class: 'axis' }, 'now'));
      const offset = this.capacity - this.samples.length;
      this.series.forEach((s, si) => {
        if (this.samples.length === 0) return;
        const pts = this.samples.map((vals, i) => `${x(offset + i).toFixed(1)},${y(vals[si] || 0).toFixed(1)}`);
        svg.appendChild(el('polyline', { points: pts.join(' '), class: s.cls, 'data-series': s.name }));
      });
    }
  }

  return { Chart };
})();
