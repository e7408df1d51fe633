#!/usr/bin/env bash
# Rebuild the niivue bundle the participant report's viewer loads (make niivue).
# Needs node and npm (the npm registry); the result is committed, so nothing is fetched at
# install or run time.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/../../mcpvs_bidsapp/data/niivue"
cd "$here"
npm ci --no-audit --no-fund --ignore-scripts
mkdir -p "$dest"
npx esbuild entry.js --bundle --minify --format=iife --target=es2020 \
    --legal-comments=none --metafile=meta.json --outfile="$dest/niivue.min.js"
node licences.js meta.json > "$dest/LICENSES.txt"
node -e '
const lock = require("./package-lock.json");
const pkgs = lock.packages;
const out = {
  niivue: pkgs["node_modules/@niivue/niivue"].version,
  esbuild: pkgs["node_modules/esbuild"].version,
  integrity: pkgs["node_modules/@niivue/niivue"].integrity,
  bundled: Object.keys(require("./meta.json").inputs)
    .filter((p) => p.includes("node_modules/"))
    .map((p) => p.split("node_modules/").pop().split("/"))
    .map((p) => (p[0].startsWith("@") ? p.slice(0, 2).join("/") : p[0]))
    .filter((v, i, a) => a.indexOf(v) === i)
    .sort()
    .map((name) => `${name}@${pkgs["node_modules/" + name].version}`),
};
process.stdout.write(JSON.stringify(out, null, 2) + "\n");
' > "$dest/VERSION.json"
rm -f meta.json
echo "wrote $dest/niivue.min.js ($(wc -c < "$dest/niivue.min.js") bytes), LICENSES.txt, VERSION.json"
