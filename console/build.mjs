// The console's one build step: `npm --prefix console ci && npm --prefix console run build`.
// Bundles src/ with esbuild into ../ledger/console/static (committed, shipped in the wheel), copies the
// front-end libraries' licences beside it, and records in build-manifest.json the digest of every
// input (sources, package.json, package-lock.json, this script) and output, which
// tests/test_console_build.py checks without network or node.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, copyFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.env.CONSOLE_OUT || join(here, "..", "ledger", "console", "static");
const sha = (buf) => createHash("sha256").update(buf).digest("hex");

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "licenses"), { recursive: true });

await esbuild.build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  legalComments: "none", // the licences are shipped whole in licenses/
  outfile: join(out, "console.js"),
  logLevel: "warning",
});
copyFileSync(join(here, "src", "console.css"), join(out, "console.css"));
copyFileSync(join(here, "src", "index.html"), join(out, "index.html"));

// Licences of every package bundled into console.js.
const lock = JSON.parse(readFileSync(join(here, "package-lock.json"), "utf8"));
const bundled = ["canonicalize", "cytoscape", "cytoscape-dagre"];
let notice = "Third-party code in console.js (the ledger's auditor console), with its licences.\n";
for (const name of bundled) {
  const meta = lock.packages[`node_modules/${name}`];
  const text = readFileSync(join(here, "node_modules", name, "LICENSE"), "utf8");
  writeFileSync(join(out, "licenses", `${name}.LICENSE.txt`), text);
  notice += `\n==== ${name} ${meta.version} (${meta.license}) ====\n\n${text.trim()}\n`;
}
notice += `\n==== @dagrejs/dagre and @dagrejs/graphlib (MIT), bundled inside cytoscape-dagre's dist ====\n\n${readFileSync(join(here, "licenses", "dagre.LICENSE.txt"), "utf8").trim()}\n`;
copyFileSync(join(here, "licenses", "dagre.LICENSE.txt"), join(out, "licenses", "dagre.LICENSE.txt"));
writeFileSync(join(out, "licenses", "THIRD-PARTY.txt"), notice);

// What the build was made from, and what it made.
function files(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? files(join(dir, d.name)) : [join(dir, d.name)]));
}
const inputs = ["package.json", "package-lock.json", "build.mjs", ...files(join(here, "src")).map((f) => relative(here, f)), ...files(join(here, "licenses")).map((f) => relative(here, f))]
  .map((f) => f.split("\\").join("/"))
  .sort();
const outputs = files(out)
  .map((f) => relative(out, f).split("\\").join("/"))
  .filter((f) => f !== "build-manifest.json")
  .sort();
const manifest = {
  note: "written by console/build.mjs; checked by tests/test_console_build.py",
  esbuild: esbuild.version,
  inputs: Object.fromEntries(inputs.map((f) => [f, sha(readFileSync(join(here, f)))])),
  outputs: Object.fromEntries(outputs.map((f) => [f, sha(readFileSync(join(out, f)))])),
};
writeFileSync(join(out, "build-manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
console.log(`built ${outputs.length} files into ${out}`);
