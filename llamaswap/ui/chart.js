// A small line chart on a canvas: time on x, one or more series on y.

function color(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

/**
 * Draw ``series`` ([{points: [[ms, value]], color}]) over the last ``windowMs`` on ``canvas``.
 * ``max`` fixes the top of the scale (e.g. 100 for percentages); otherwise it follows the data.
 */
export function drawChart(canvas, series, { windowMs = 15 * 60 * 1000, max = null, unit = "" } = {}) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 300, height = canvas.clientHeight || 140;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  const now = Date.now();
  const left = 40, right = 6, top = 6, bottom = 18;
  const values = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => Number.isFinite(v));
  let top_value = max ?? Math.max(1, ...values) * 1.15;
  if (!Number.isFinite(top_value) || top_value <= 0) top_value = 1;
  const x = (t) => left + ((t - (now - windowMs)) / windowMs) * (width - left - right);
  const y = (v) => top + (1 - v / top_value) * (height - top - bottom);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = color("--muted");
  ctx.strokeStyle = color("--line");
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i += 1) {
    const v = (top_value * i) / 4;
    const py = Math.round(y(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(left, py); ctx.lineTo(width - right, py); ctx.stroke();
    const label = v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
    ctx.fillText(`${label}${unit}`, 2, py + 4);
  }
  const minutes = Math.round(windowMs / 60000);
  ctx.fillText(`−${minutes} min`, left, height - 4);
  ctx.fillText("now", width - right - 22, height - 4);
  for (const s of series) {
    const points = s.points.filter((p) => p[0] >= now - windowMs && Number.isFinite(p[1]));
    if (!points.length) continue;
    ctx.strokeStyle = s.color || color("--accent");
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
    ctx.stroke();
    if (points.length === 1) {
      ctx.fillStyle = ctx.strokeStyle;
      ctx.beginPath(); ctx.arc(x(points[0][0]), y(points[0][1]), 3, 0, Math.PI * 2); ctx.fill();
    }
  }
}

/** The series colours, readable on light and dark backgrounds. */
export const PALETTE = ["#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#ec4899"];
