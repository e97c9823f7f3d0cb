// Matches of the published pre-tokenizer regexes under a backtracking engine
// with lookahead (JavaScript's), for split_regex_test.cc: every string of up
// to 4 characters over a 12-character alphabet, and of 5 to 6 characters
// over a 5-character one (whitespace runs, letters, punctuation).
//
//   node split_reference.mjs PATTERNS.json
//
// PATTERNS.json holds a JSON array of Oniguruma patterns as tokenizer.json
// has them. Prints {"texts": [...], "matches": [[[match, ...] per text] per
// pattern]}. The only
// construct JavaScript lacks, Qwen's (?i:...) group, is spelled out with
// character classes, as the JavaScript port of Hugging Face tokenizers does.
// The alphabets avoid U+0085 and U+FEFF, where JavaScript's \s differs from
// Oniguruma's.
import fs from "node:fs";

const patterns = JSON.parse(fs.readFileSync(process.argv[2], "utf8")).map(
  (p) =>
    new RegExp(
      p.replace(
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)",
        "(?:'(?:[sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))",
      ),
      "gu",
    ),
);

function* strings(alphabet, length) {
  if (length === 0) {
    yield "";
    return;
  }
  for (const prefix of strings(alphabet, length - 1)) {
    for (const c of alphabet) yield prefix + c;
  }
}

const texts = [];
const wide = [" ", "\t", "\n", "\r", "a", "s", "S", "1", ".", "'", "\u00a0", "中"];
for (let n = 1; n <= 4; ++n) texts.push(...strings(wide, n));
const narrow = [" ", "\n", "\t", "a", "."];
for (let n = 5; n <= 6; ++n) texts.push(...strings(narrow, n));

const matches = patterns.map((re) => texts.map((t) => Array.from(t.matchAll(re), (m) => m[0])));
process.stdout.write(JSON.stringify({ texts, matches }));
