// A queue's depth over time: an inline SVG line chart drawn from the
// samples (the host's, or the page's own), and the trend of its last minute.

import { SVG } from "./dom.js";

/** A line chart of `history`'s depth and poison depth. */
export function chart(history) {
  const width = 240;
  const height = 48;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  // Stretched to its panel's width (CSS sets the size); the strokes keep
  // their width with `vector-effect: non-scaling-stroke`.
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  const top = Math.max(1, ...history.map((s) => Math.max(s.length || 0, s.poison_length || 0)));
  const line = (key, cls) => {
    const step = history.length > 1 ? width / (history.length - 1) : width;
    const points = history.map((s, i) => `${(i * step).toFixed(1)},${(height - 2 - ((s[key] || 0) / top) * (height - 4)).toFixed(1)}`);
    const poly = document.createElementNS(SVG, "polyline");
    poly.setAttribute("points", points.join(" "));
    poly.setAttribute("class", cls);
    svg.append(poly);
  };
  if (history.length) {
    line("length", "depth");
    line("poison_length", "poison");
  }
  const title = document.createElementNS(SVG, "title");
  title.textContent = `queue depth, highest ${top}`;
  svg.append(title);
  return svg;
}

/** How fast the depth moved over the last minute of `history`, per second. */
export function trend(history) {
  const last = history[history.length - 1];
  const first = history.find((s) => last && s.at_ms >= last.at_ms - 60000);
  if (!last || !first || last.at_ms === first.at_ms) return "no trend yet";
  const rate = ((last.length || 0) - (first.length || 0)) / ((last.at_ms - first.at_ms) / 1000);
  return `${rate >= 0 ? "+" : ""}${rate.toFixed(1)}/s over the last minute`;
}
