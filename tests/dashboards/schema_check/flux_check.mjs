// Checks Flux queries with the Flux language server (@influxdata/flux-lsp-browser, a wasm build of
// influxdata/flux-lsp): each query is opened as its own document (textDocument/didOpen), the
// server's first textDocument/publishDiagnostics for it is kept, and it is closed again before
// the next one, so no query is analysed together with another.
//
// stdin:  {"queries": [{"id": "...", "text": "..."}, ...]}
// stdout: {"server": {"name", "version"}, "results": [{"id", "diagnostics": [{"message", "severity",
//          "line", "character"}]}]}   (line and character 0-based, as LSP counts them)
//
// The package is built for a bundler (its glue module imports the .wasm file, which imports the
// glue back); node cannot load that cycle, so the glue is copied with the import replaced by a
// setter and the module instantiated here with the glue as its imports.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";

// The server logs through console.*; stdout is for the answer alone.
for (const name of ["log", "info", "debug", "warn"]) console[name] = console.error;

const require = createRequire(import.meta.url);
const pkg = dirname(require.resolve("@influxdata/flux-lsp-browser/package.json"));
const IMPORT = "import * as wasm from './flux-lsp-browser_bg.wasm';";
const CACHES = /^cached(Int32|Uint8)Memory0 = new \w+\(wasm\.memory\.buffer\);$/gm;

async function loadLsp() {
  let glue = readFileSync(join(pkg, "flux-lsp-browser_bg.js"), "utf8");
  if (!glue.startsWith(IMPORT) || (glue.match(CACHES) || []).length !== 2) {
    throw new Error(`flux-lsp-browser_bg.js is not the layout this script knows (${pkg})`);
  }
  glue = glue.replace(
    IMPORT,
    "let wasm;\nexport function __bind(exports) {\n  wasm = exports;\n" +
      "  cachedInt32Memory0 = new Int32Array(wasm.memory.buffer);\n" +
      "  cachedUint8Memory0 = new Uint8Array(wasm.memory.buffer);\n}",
  );
  glue = glue.replace(CACHES, "");
  const dir = mkdtempSync(join(tmpdir(), "flux-lsp-"));
  try {
    const file = join(dir, "glue.mjs");
    writeFileSync(file, glue);
    const mod = await import(pathToFileURL(file).href);
    const bytes = readFileSync(join(pkg, "flux-lsp-browser_bg.wasm"));
    const { instance } = await WebAssembly.instantiate(bytes, { "./flux-lsp-browser_bg.js": mod });
    mod.__bind(instance.exports);
    return mod;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

const input = await readStdin();
const flux = await loadLsp();
const lsp = new flux.Lsp();
const waiting = new Map(); // uri -> resolve
lsp.onMessage((text) => {
  const msg = JSON.parse(text);
  if (msg.method !== "textDocument/publishDiagnostics") return;
  const resolve = waiting.get(msg.params.uri);
  if (resolve) {
    waiting.delete(msg.params.uri);
    resolve(msg.params.diagnostics);
  }
});
lsp.run().then(
  () => console.error("flux-lsp: the server stopped"),
  (err) => console.error("flux-lsp: the server failed", err),
);

const send = (msg) => lsp.send(JSON.stringify({ jsonrpc: "2.0", ...msg }));
const init = JSON.parse(await send({ id: 1, method: "initialize", params: { processId: null, rootUri: null, capabilities: {} } }));
if (!init.result) throw new Error(`initialize failed: ${JSON.stringify(init)}`);
await send({ method: "initialized", params: {} });

const results = [];
for (const [i, query] of input.queries.entries()) {
  const uri = `file:///tplr-metrics/q${i}.flux`;
  const published = new Promise((resolve, reject) => {
    waiting.set(uri, resolve);
    setTimeout(() => reject(new Error(`no diagnostics published for ${query.id} in 30 s`)), 30000).unref();
  });
  await send({
    method: "textDocument/didOpen",
    params: { textDocument: { uri, languageId: "flux", version: 1, text: query.text } },
  });
  const diagnostics = await published;
  await send({ method: "textDocument/didClose", params: { textDocument: { uri } } });
  results.push({
    id: query.id,
    diagnostics: diagnostics.map((d) => ({
      message: d.message,
      severity: d.severity,
      line: d.range.start.line,
      character: d.range.start.character,
    })),
  });
}
process.stdout.write(JSON.stringify({ server: init.result.serverInfo, results }));
process.exit(0);
