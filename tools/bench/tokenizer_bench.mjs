// The JavaScript side of tokenizer_bench: encodes the same documents with the
// JavaScript port of Hugging Face tokenizers (@lenml/tokenizers) and prints
// one JSON object {"seconds": S, "tokens": N, "bytes": B}.
//
//   node tokenizer_bench.mjs NODE_MODULES TOKENIZER DOCUMENTS.jsonl
//
// DOCUMENTS.jsonl holds one JSON string per line. The first 5% of the
// documents are encoded once untimed, so that the JIT has warmed up.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [nodeModules, name, documentsFile] = process.argv.slice(2);
if (!nodeModules || !name || !documentsFile) {
  console.error("usage: node tokenizer_bench.mjs NODE_MODULES TOKENIZER DOCUMENTS.jsonl");
  process.exit(2);
}
const lenml = path.join(nodeModules, "@lenml");
const { TokenizerLoader } = await import(
  pathToFileURL(path.join(lenml, "tokenizers", "dist", "main.mjs")).href
);
const dir = path.join(lenml, `tokenizer-${name}`, "models");
const tokenizer = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8")),
  tokenizerConfig: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8")),
});

const documents = fs
  .readFileSync(documentsFile, "utf8")
  .split("\n")
  .filter((line) => line !== "")
  .map((line) => JSON.parse(line));
for (const d of documents.slice(0, Math.ceil(documents.length / 20))) {
  tokenizer.encode(d, { add_special_tokens: false });
}
let tokens = 0;
let bytes = 0;
const start = process.hrtime.bigint();
for (const d of documents) {
  tokens += tokenizer.encode(d, { add_special_tokens: false }).length;
}
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
for (const d of documents) bytes += Buffer.byteLength(d, "utf8");
process.stdout.write(JSON.stringify({ seconds, tokens, bytes }) + "\n");
