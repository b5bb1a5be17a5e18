// Skill outputs drawn over the image: boxes with labels and scores (detect, animals), OCR line
// and word polygons with their text, barcode outlines with the decoded text, points, and the
// synthetic verdict. Every coordinate the API gives is in pixels of the upright image; `scale`
// maps them onto the canvas when the browser decoded the image at another size.
// Each drawing also returns legend entries ({skill, text, color}) for the list beside it.

// Saturated colours that stay apart from each other and from most photos' greys.
export const PALETTE = [
  "#ff1744", "#00e676", "#2979ff", "#ffea00", "#d500f9",
  "#00e5ff", "#ff9100", "#76ff03", "#f50057", "#651fff",
];

export function colorFor(label) {
  let hash = 0;
  for (const char of String(label)) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

function lineWidth(ctx) {
  return Math.max(2, Math.round(Math.max(ctx.canvas.width, ctx.canvas.height) / 250));
}

function tag(ctx, text, x, y, color, size = Math.max(12, lineWidth(ctx) * 6)) {
  ctx.font = `${size}px sans-serif`;
  const width = ctx.measureText(text).width + 8;
  const top = Math.max(0, y - size - 4);
  ctx.fillStyle = color;
  ctx.fillRect(x, top, width, size + 4);
  ctx.fillStyle = "#000";
  ctx.textBaseline = "top";
  ctx.fillText(text, x + 4, top + 2);
}

function box(ctx, scale, [x1, y1, x2, y2], label, color) {
  const [sx, sy] = scale;
  ctx.strokeStyle = color;
  ctx.lineWidth = lineWidth(ctx);
  ctx.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
  tag(ctx, label, x1 * sx, y1 * sy, color);
}

function polygon(ctx, scale, points, color, width, dashed = false) {
  if (!points || points.length < 2) return;
  const [sx, sy] = scale;
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  ctx.setLineDash(dashed ? [width * 3, width * 2] : []);
  ctx.beginPath();
  points.forEach(([x, y], i) => (i === 0 ? ctx.moveTo(x * sx, y * sy) : ctx.lineTo(x * sx, y * sy)));
  ctx.closePath();
  ctx.stroke();
  ctx.setLineDash([]);
}

const score = (value) => (typeof value === "number" ? ` ${value.toFixed(2)}` : "");

function detect(ctx, scale, output) {
  return (output.objects || []).map((object) => {
    const color = colorFor(object.label);
    const text = `${object.label}${score(object.score)}`;
    box(ctx, scale, object.box, text, color);
    return { text, color };
  });
}

function animals(ctx, scale, output) {
  return (output.annotations || []).map((item) => {
    const color = colorFor(item.category);
    const text = `${item.label}${score(item.score)}`;
    box(ctx, scale, item.box, text, color);
    return { text, color };
  });
}

function* ocrLines(output) {
  for (const page of output.pages || []) {
    for (const block of page.blocks || []) yield* block.lines || [];
  }
}

function ocr(ctx, scale, output) {
  const legend = [];
  const lineColor = PALETTE[2];
  const wordColor = PALETTE[1];
  for (const line of ocrLines(output)) {
    polygon(ctx, scale, line.polygon, lineColor, lineWidth(ctx), true);
    for (const word of line.words || []) {
      polygon(ctx, scale, word.polygon, wordColor, Math.max(1, lineWidth(ctx) / 2));
      const xs = word.polygon.map(([x]) => x * scale[0]);
      const ys = word.polygon.map(([, y]) => y * scale[1]);
      // Half the word's height: the text above a word should not hide the line above it.
      const size = Math.max(10, Math.round((Math.max(...ys) - Math.min(...ys)) / 2));
      tag(ctx, word.text, Math.min(...xs), Math.min(...ys), wordColor, size);
    }
    legend.push({ text: line.text, color: lineColor });
  }
  return legend;
}

function barcode(ctx, scale, output) {
  return (output.barcodes || []).map((code) => {
    const color = colorFor(code.format);
    polygon(ctx, scale, code.polygon, color, lineWidth(ctx));
    const [x, y] = code.polygon[0];
    const text = `${code.format}: ${code.text}`;
    tag(ctx, text, x * scale[0], y * scale[1], color);
    return { text, color };
  });
}

function point(ctx, scale, output) {
  const color = PALETTE[4];
  const radius = lineWidth(ctx) * 3;
  return (output.points || []).map(({ x, y }) => {
    ctx.fillStyle = color;
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = Math.max(1, radius / 3);
    ctx.beginPath();
    ctx.arc(x * scale[0], y * scale[1], radius, 0, 2 * Math.PI);
    ctx.fill();
    ctx.stroke();
    return { text: `point (${Math.round(x)}, ${Math.round(y)})`, color };
  });
}

function synthetic(ctx, scale, output) {
  const color = output.is_ai ? PALETTE[0] : PALETTE[1];
  const text = `${output.verdict} (AI ${(output.ai_probability * 100).toFixed(0)}%)`;
  tag(ctx, text, 0, lineWidth(ctx) * 8, color);
  return [{ text, color }];
}

// Skills with nothing to draw still say what they found, in the legend.
function textOnly(field) {
  return (ctx, scale, output) => [{ text: String(output[field] ?? ""), color: "#888" }];
}

function metadata(ctx, scale, output) {
  const text = Object.entries(output)
    .filter(([, value]) => value !== null && typeof value !== "object")
    .map(([name, value]) => `${name} ${value}`)
    .join(", ");
  return [{ text, color: "#888" }];
}

const DRAWERS = {
  detect,
  animals,
  ocr,
  barcode,
  point,
  synthetic,
  metadata,
  caption: textOnly("caption"),
  query: textOnly("answer"),
};

// Draws `source` (an ImageBitmap or a video) and every skill output over it.
export function drawResult(canvas, source, outputs, size) {
  const width = source.videoWidth || source.width;
  const height = source.videoHeight || source.height;
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(source, 0, 0, width, height);
  const scale = size ? [width / size.width, height / size.height] : [1, 1];
  const legend = [];
  for (const [skill, output] of Object.entries(outputs || {})) {
    const draw = DRAWERS[skill];
    const entries = draw ? draw(ctx, scale, output) : [{ text: JSON.stringify(output), color: "#888" }];
    if (!entries.length) entries.push({ text: `${skill}: nothing found`, color: "#888", empty: true });
    legend.push(...entries.map((entry) => ({ skill, ...entry })));
  }
  return legend;
}
