// Builds the test pages into a folder: node build.mjs <outdir>
//
// The OFREP page's script imports @openfeature/web-sdk and @openfeature/ofrep-web-provider
// from node_modules; esbuild bundles it into one file a plain <script> tag loads. The
// HTML pages (and the EventSource page's script, which needs no bundling) are copied.

import { copyFile, mkdir, readdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const pages = join(here, "pages");
const outdir = process.argv[2];
if (!outdir) {
  console.error("usage: node build.mjs <outdir>");
  process.exit(2);
}
await mkdir(outdir, { recursive: true });

await build({
  entryPoints: { "ofrep.bundle": join(pages, "ofrep_entry.js") },
  outdir,
  bundle: true,
  format: "iife",
  platform: "browser",
  target: ["chrome110"],
  sourcemap: "inline",
  logLevel: "warning",
});

for (const name of await readdir(pages)) {
  if (name.endsWith(".html") || name === "eventsource.js") {
    await copyFile(join(pages, name), join(outdir, name));
  }
}
console.log(JSON.stringify({ outdir }));
