// Reference token ids from the JavaScript port of Hugging Face tokenizers
// (@lenml/tokenizers, pinned in tools/npm/package.json), for
// tests/scheduler/tokenizer/tokenizer_reference_test.cc.
//
//   node reference_ids.mjs NODE_MODULES TOKENIZER [--no-random] CORPUS.jsonl... > reference.json
//
// NODE_MODULES is the folder tools/setup.sh installs the packages into
// (${MOESERVE_CACHE_DIR:-~/.cache/moeserve}/npm/node_modules); TOKENIZER is
// deepseek_v3 or qwen3. Each corpus line is one JSON string. To them the
// script adds random strings drawn with a fixed seed (unless --no-random),
// and prints one JSON
// object with, per text: "texts", "nfc" (the text's NFC form), "plain" (ids
// without special tokens), "special" (with them), "decoded" (decode of
// plain) and "decoded_skip" (the same with skip_special_tokens).
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [nodeModules, name, ...rest] = process.argv.slice(2);
const random = rest[0] !== "--no-random";
const corpusFiles = random ? rest : rest.slice(1);
if (!nodeModules || !name || corpusFiles.length === 0) {
  console.error("usage: node reference_ids.mjs NODE_MODULES TOKENIZER CORPUS.jsonl...");
  process.exit(2);
}
const lenml = path.join(nodeModules, "@lenml");
const { TokenizerLoader } = await import(
  pathToFileURL(path.join(lenml, "tokenizers", "dist", "main.mjs")).href
);

function load(name) {
  const dir = path.join(lenml, `tokenizer-${name}`, "models");
  return TokenizerLoader.fromPreTrained({
    tokenizerJSON: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8")),
    tokenizerConfig: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8")),
  });
}

// xorshift32: the same strings on every run and machine.
function rng(seed) {
  let x = seed >>> 0;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296;
  };
}

// Code point ranges to draw printable text from: ASCII, Latin-1 letters,
// Latin Extended-A, combining marks, Greek, Cyrillic, Arabic, Devanagari,
// Hangul, CJK, kana, full-width forms, symbols and emoji (all assigned before
// Unicode 13, so every Unicode table in play agrees on them), spaces, tabs and
// newlines. U+0085, U+FEFF and U+017F are left out on purpose: there the
// JavaScript port differs from Hugging Face (see the divergence tests).
const RANGES = [
  [0x20, 0x7e, 40], [0x09, 0x0a, 4], [0x0d, 0x0d, 1], [0xa0, 0xff, 6], [0x100, 0x17e, 3],
  [0x300, 0x36f, 3], [0x391, 0x3c9, 3], [0x410, 0x44f, 3], [0x621, 0x64a, 2], [0x905, 0x939, 2],
  [0xac00, 0xd7a3, 4], [0x4e00, 0x9fa5, 6], [0x3041, 0x3096, 3], [0x30a1, 0x30fa, 3],
  [0xff01, 0xff5e, 2], [0x2000, 0x206f, 2], [0x2190, 0x21ff, 1], [0x2200, 0x22ff, 1],
  [0x1f600, 0x1f64f, 3], [0x1f300, 0x1f5ff, 2], [0x3000, 0x3003, 1],
];
const TOTAL = RANGES.reduce((s, r) => s + r[2], 0);

function randomText(next) {
  const length = 1 + Math.floor(next() * 60);
  let s = "";
  for (let i = 0; i < length; ++i) {
    let pick = next() * TOTAL;
    let r = RANGES[0];
    for (const range of RANGES) {
      if (pick < range[2]) {
        r = range;
        break;
      }
      pick -= range[2];
    }
    const cp = r[0] + Math.floor(next() * (r[1] - r[0] + 1));
    if (cp === 0x2028 || cp === 0x2029 || (cp >= 0x2060 && cp <= 0x206f)) continue;
    s += String.fromCodePoint(cp);
  }
  return s;
}

const texts = [];
for (const file of corpusFiles) {
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    if (line.trim() !== "") texts.push(JSON.parse(line));
  }
}
const next = rng(20250601);
for (let i = 0; random && i < 300; ++i) texts.push(randomText(next));

const tokenizer = load(name);
const out = { texts, nfc: [], plain: [], special: [], decoded: [], decoded_skip: [] };
for (const text of texts) {
  const plain = tokenizer.encode(text, { add_special_tokens: false });
  out.nfc.push(text.normalize("NFC"));
  out.plain.push(plain);
  out.special.push(tokenizer.encode(text, { add_special_tokens: true }));
  // decode() refuses an empty list; its text is empty.
  out.decoded.push(plain.length ? tokenizer.decode(plain) : "");
  out.decoded_skip.push(plain.length ? tokenizer.decode(plain, { skip_special_tokens: true }) : "");
}
process.stdout.write(JSON.stringify(out));
