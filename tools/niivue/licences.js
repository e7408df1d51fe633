// Print the licence text of every package esbuild put into the bundle (from its metafile).
const fs = require("fs");
const path = require("path");
const meta = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const names = [...new Set(Object.keys(meta.inputs)
  .filter((p) => p.includes("node_modules/"))
  .map((p) => p.split("node_modules/").pop().split("/"))
  .map((p) => (p[0].startsWith("@") ? p.slice(0, 2).join("/") : p[0])))].sort();
const out = ["Third-party code in niivue.min.js (bundled with esbuild by tools/niivue/build.sh)", ""];
for (const name of names) {
  const dir = path.join("node_modules", name);
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
  const file = fs.readdirSync(dir).find((f) => /^(licen[cs]e|copying)(\.|$)/i.test(f));
  out.push("=".repeat(78), `${name} ${pkg.version} (${pkg.license || "see below"})`, "=".repeat(78));
  out.push(file ? fs.readFileSync(path.join(dir, file), "utf8").trim() : "(no licence file in the package; licence field: " + pkg.license + ")", "");
}
process.stdout.write(out.join("\n") + "\n");
