// The lineage graph: a left-to-right DAG (dagre layout) drawn by cytoscape on a canvas, so 500 nodes
// stay responsive; labels fade out when zoomed far out and come back on zoom (min-zoomed-font-size).
import cytoscape from "cytoscape";
import dagre from "cytoscape-dagre";

cytoscape.use(dagre);

const TAG_COLOURS = { pii: "#b3261e", phi: "#a15c00", confidential: "#6a1b9a" };

function label(n) {
  const d = n.data || {};
  if (n.type === "RUN") return `run ${String(d.id || n.id).replace(/^run:/, "").slice(0, 8)}`;
  return d.name || n.id;
}

const READABLE = 0.8; // below this zoom, labels are too small to read

// Fit the whole graph when it is readable so; otherwise show the node asked for (or the first) at a
// readable zoom, and let the auditor zoom out (labels then give way to shapes and colours).
export function overview(cy, focusId) {
  cy.fit(undefined, 30);
  if (cy.zoom() > 1.4) {
    cy.zoom(1.4); // a small graph is not blown up
    cy.center();
  } else if (cy.zoom() < READABLE) {
    const focus = cy.nodes(".focus");
    const target = focus.nonempty() ? focus : cy.nodes().first();
    cy.zoom(READABLE);
    cy.center(target);
    if (!focus.nonempty() || !focus.incomers().nonempty()) cy.panBy({ x: 140 - target.renderedPosition().x, y: 0 }); // a source: near the left edge
  }
}

// The node a lineage was asked around: itself, or for `run:<id>` the job whose run it is.
export function isFocus(n, focusId) {
  return n.id === focusId || (focusId.startsWith("run:") && n.type === "JOB" && n.data?.latestRunId === focusId.slice(4));
}

export function drawLineage(container, graph, focusId, onOpen) {
  const ids = new Set(graph.map((n) => n.id));
  const elements = [];
  for (const n of graph) {
    const c = n.data?.classification || {};
    const tags = c.effective || [];
    const tag = ["pii", "phi", "confidential"].find((t) => tags.includes(t));
    elements.push({
      data: {
        id: n.id,
        label: label(n) + (tags.length ? `\n[${tags.join(", ")}]` : "") + ((c.declassified || []).length ? "\n(declassified)" : ""),
        kind: n.type,
        colour: tag ? TAG_COLOURS[tag] : n.type === "DATASET" ? "#1f5fa8" : n.type === "JOB" ? "#2e6b30" : "#555",
      },
      classes: [n.type.toLowerCase(), tag ? "tagged" : "", (c.declassified || []).length ? "declassified" : "", isFocus(n, focusId) ? "focus" : ""].join(" "),
    });
  }
  for (const n of graph) {
    for (const e of n.outEdges || []) {
      if (ids.has(e.origin) && ids.has(e.destination)) elements.push({ data: { id: `${e.origin}->${e.destination}`, source: e.origin, target: e.destination } });
    }
  }
  const byId = new Map(graph.map((n) => [n.id, n]));
  const cy = cytoscape({
    container,
    elements,
    minZoom: 0.05,
    maxZoom: 3,
    boxSelectionEnabled: false,
    style: [
      {
        selector: "node",
        style: {
          label: "data(label)",
          "text-wrap": "wrap",
          "text-max-width": 130,
          "text-overflow-wrap": "anywhere",
          "font-size": 11,
          "font-family": "system-ui, sans-serif",
          color: "#1b1b1b",
          "text-valign": "bottom",
          "text-margin-y": 4,
          "min-zoomed-font-size": 7,
          "background-color": "data(colour)",
          width: 26,
          height: 26,
        },
      },
      { selector: "node.dataset", style: { shape: "round-rectangle", width: 34 } },
      { selector: "node.job", style: { shape: "diamond" } },
      { selector: "node.run", style: { shape: "ellipse", width: 16, height: 16 } },
      { selector: "node.tagged", style: { "border-width": 3, "border-color": "#1b1b1b" } },
      { selector: "node.declassified", style: { "border-width": 4, "border-style": "dashed", "border-color": "#0a7d32", "outline-width": 0 } },
      { selector: "node.focus", style: { "overlay-color": "#f2b705", "overlay-opacity": 0.35, "overlay-padding": 8 } },
      { selector: "node:selected", style: { "overlay-color": "#0b57d0", "overlay-opacity": 0.3, "overlay-padding": 6 } },
      {
        selector: "edge",
        style: { width: 1.5, "line-color": "#8a8f98", "target-arrow-color": "#8a8f98", "target-arrow-shape": "triangle", "curve-style": "bezier", "arrow-scale": 0.8 },
      },
    ],
    layout: { name: "dagre", rankDir: "LR", nodeSep: 22, rankSep: 125, edgeSep: 6, fit: false, animate: false },
  });
  overview(cy, focusId);
  cy.on("tap", "node", (ev) => onOpen(byId.get(ev.target.id())));
  container.__cy = cy; // for the browser tests: what is drawn
  return cy;
}
