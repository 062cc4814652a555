// The one chart component: bars over categories (days, hours) drawn by
// uPlot. uPlot sets element styles through the CSSOM (allowed by the
// gateway's style-src 'self'); its stylesheet is a file.
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

function cssVar(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

/**
 * labels: category names (x axis); series: [{label, values: [number], colorVar?}]
 * (colorVar: a CSS custom property such as '--error')
 * stacked: series drawn on top of each other; format(v, i, s): legend text of
 * a value (pass the API's exact strings through it); onPick(i): a bar clicked.
 */
export function BarChart({ labels, series, height = 220, stacked, format, onPick, title }) {
  const box = useRef(null);
  const plot = useRef(null);
  const pick = useRef(onPick);
  pick.current = onPick;

  useEffect(() => {
    const el = box.current;
    if (!el) return undefined;
    const palette = [cssVar('--accent', '#2563eb'), cssVar('--chart-2', '#a855f7'),
      cssVar('--chart-3', '#f59e0b'), cssVar('--chart-4', '#10b981'), cssVar('--chart-5', '#ef4444'),
      cssVar('--chart-6', '#64748b')];
    const axisColor = cssVar('--muted', '#667');
    const gridColor = cssVar('--grid', 'rgba(128,128,128,0.2)');
    const xs = labels.map((_, i) => i);
    // Stacked: each series drawn as the running sum, legend shows its own value.
    const own = series.map((s) => s.values);
    const drawn = [];
    series.forEach((s, k) => drawn.push(s.values.map((v, i) => (stacked && k > 0 ? drawn[k - 1][i] : 0) + (v || 0))));
    const bars = uPlot.paths.bars({ size: [0.7, 64], align: 0 });
    const opts = {
      width: Math.max(200, el.clientWidth),
      height,
      legend: { show: true, live: true },
      cursor: { points: { show: false }, drag: { x: false, y: false } },
      scales: { x: { time: false, range: [-0.5, labels.length - 0.5] }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [
        { stroke: axisColor, grid: { show: false }, ticks: { stroke: gridColor },
          values: (u, ticks) => ticks.map((t) => (Number.isInteger(t) && labels[t] !== undefined ? labels[t] : '')),
          splits: () => xs.filter((i) => labels.length <= 12 || i % Math.ceil(labels.length / 10) === 0) },
        { stroke: axisColor, grid: { stroke: gridColor }, ticks: { stroke: gridColor }, size: 56 },
      ],
      series: [
        { label: title || 'x', value: (u, v) => (v == null ? '' : labels[v] ?? '') },
        ...series.map((s, k) => ({
          label: s.label,
          fill: s.colorVar ? cssVar(s.colorVar, palette[k]) : palette[k % palette.length],
          stroke: s.colorVar ? cssVar(s.colorVar, palette[k]) : palette[k % palette.length],
          width: 0,
          paths: bars,
          value: (u, v, si, i) => (i == null ? '—' : format ? format(own[k][i], i, k) : String(own[k][i])),
        })),
      ],
    };
    // Draw the last stack first so lower ones stay visible.
    const order = stacked ? [...drawn.keys()].reverse() : [...drawn.keys()];
    const data = [xs, ...drawn];
    if (stacked) {
      opts.series = [opts.series[0], ...order.map((k) => opts.series[k + 1])];
      data.splice(1, drawn.length, ...order.map((k) => drawn[k]));
    }
    const u = new uPlot(opts, data, el);
    plot.current = u;
    const click = () => {
      const i = u.cursor.idx;
      if (i != null && pick.current) pick.current(i);
    };
    if (onPick) u.over.addEventListener('click', click);
    const ro = new ResizeObserver(() => {
      const w = Math.max(200, el.clientWidth);
      if (Math.abs(w - u.width) > 1) u.setSize({ width: w, height });
    });
    ro.observe(el);
    return () => { ro.disconnect(); u.destroy(); plot.current = null; };
  }, [JSON.stringify(labels), JSON.stringify(series.map((s) => [s.label, s.values])), stacked, height]);

  return <div class={'chart' + (onPick ? ' pickable' : '')} ref={box} role="img" aria-label={title} />;
}
