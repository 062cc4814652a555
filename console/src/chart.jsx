// The one chart component: bars over categories (days, hours) drawn by
// uPlot. uPlot sets element styles through the CSSOM (allowed by the
// gateway's style-src 'self'); its stylesheet is a file. Colours come from
// the CSS custom properties, so the chart follows prefers-color-scheme.
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

const PALETTE = ['--accent', '--chart-2', '--chart-3', '--chart-4', '--chart-5', '--chart-6'];
const tickFmt = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 3 });

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';
}

function useScheme() {
  const [dark, setDark] = useState(() => matchMedia('(prefers-color-scheme: dark)').matches);
  useEffect(() => {
    const m = matchMedia('(prefers-color-scheme: dark)');
    const f = () => setDark(m.matches);
    m.addEventListener('change', f);
    return () => m.removeEventListener('change', f);
  }, []);
  return dark;
}

/**
 * labels: category names (x axis); series: [{label, values: [number], colorVar?}]
 * (colorVar: a CSS custom property such as '--error'); stacked: series drawn
 * on top of each other; format(i, k): the text of series k at category i
 * (pass the API's exact strings through it); readout(i): the whole text for
 * category i instead (format is then unused); onPick(i): a bar was clicked;
 * counts: the values are whole numbers, so are the y axis's ticks; legend:
 * the legend even for one series.
 */
export function BarChart({ labels, series, height = 220, stacked, format, readout, onPick, title, hint, counts, legend }) {
  const box = useRef(null);
  const pick = useRef(onPick);
  pick.current = onPick;
  const [idx, setIdx] = useState(null);
  const dark = useScheme();
  const colorOf = (s, k) => s.colorVar || PALETTE[k % PALETTE.length];

  useEffect(() => {
    const el = box.current;
    if (!el) return undefined;
    const axisColor = cssVar('--muted');
    const gridColor = cssVar('--grid');
    const xs = labels.map((_, i) => i);
    const drawn = [];
    series.forEach((s, k) => drawn.push(s.values.map((v, i) => (stacked && k > 0 ? drawn[k - 1][i] : 0) + (v || 0))));
    const bars = uPlot.paths.bars({ size: [0.7, 64], align: 0 });
    // as many labels as fit (about 52 px each), counted back from the newest
    const every = (u) => Math.max(1, Math.ceil(labels.length / Math.max(2, Math.floor(u.width / 52))));
    // Stacked: draw the top of the stack first so the lower ones stay visible.
    const order = stacked ? [...series.keys()].reverse() : [...series.keys()];
    const opts = {
      width: Math.max(200, el.clientWidth),
      height,
      legend: { show: false },
      cursor: { points: { show: false }, drag: { x: false, y: false } },
      scales: { x: { time: false, range: [-0.5, labels.length - 0.5] }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [
        { stroke: axisColor, grid: { show: false }, ticks: { stroke: gridColor },
          splits: (u) => xs.filter((i) => (labels.length - 1 - i) % every(u) === 0),
          values: (u, ticks) => ticks.map((t) => labels[t] ?? '') },
        { stroke: axisColor, grid: { stroke: gridColor }, ticks: { stroke: gridColor }, size: 80,
          ...(counts ? { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 1e7, 1e8, 1e9] } : {}),
          values: (u, ticks) => ticks.map((t) => tickFmt.format(t)) },
      ],
      series: [{}, ...order.map((k) => ({
        label: series[k].label,
        fill: cssVar(colorOf(series[k], k)),
        stroke: cssVar(colorOf(series[k], k)),
        width: 0,
        points: { show: false },
        paths: bars,
      }))],
      hooks: { setCursor: [(u) => setIdx(u.cursor.idx ?? null)] },
    };
    const u = new uPlot(opts, [xs, ...order.map((k) => drawn[k])], el);
    const click = () => { if (u.cursor.idx != null && pick.current) pick.current(u.cursor.idx); };
    u.over.addEventListener('click', click);
    const ro = new ResizeObserver(() => {
      const w = Math.max(200, el.clientWidth);
      if (Math.abs(w - u.width) > 1) u.setSize({ width: w, height });
    });
    ro.observe(el);
    return () => { ro.disconnect(); u.destroy(); };
  }, [JSON.stringify(labels), JSON.stringify(series.map((s) => [s.label, s.values])), stacked, height, dark, counts]);

  const text = (i, k) => (format ? format(i, k) : String(series[k].values[i]));
  return (
    <figure class="chart-figure">
      <div class={'chart' + (onPick ? ' pickable' : '') + (height < 220 ? ' short' : '')} ref={box} role="img" aria-label={title} />
      <figcaption class="chart-readout">
        {(series.length > 1 || legend) && series.map((s, k) => (
          <span class="legend-item" key={k}><span class={'swatch ' + colorOf(s, k).slice(2)} />{s.label}</span>))}
        <span class="readout" aria-live="polite">
          {idx === null ? (hint || '') : readout ? readout(idx)
            : `${labels[idx]}: ` + series.map((s, k) => `${s.label} ${text(idx, k)}`).join(' · ')}
        </span>
      </figcaption>
    </figure>
  );
}
