// ref.mjs: the reference side of the tokenizer parity test
// (model/tokenizer/parity_test.go).
//
//   node ref.mjs js|rs PACKAGE_DIR MODEL_DIR [VARIANT] < corpus.jsonl
//
// js: PACKAGE_DIR is npm @huggingface/tokenizers (tokenizers.js); rs: npm
// tokenizers, Hugging Face's Rust tokenizers behind its Node binding.
// MODEL_DIR holds tokenizer.json and tokenizer_config.json. VARIANT names an
// entry of variants.json: its "patch" replaces top-level keys of
// tokenizer.json and its "added" tokens are appended to added_tokens.
//
// Every input line is a JSON string; every output line is
// {"ids":[…],"plain":[…],"text":"…","plain_text":"…","pieces":[…]}: the ids
// with and without special tokens, their decodings (special tokens kept, no
// clean-up of tokenization spaces) and the decoding of each id of plain on
// its own (partial UTF-8 included).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL, fileURLToPath } from "node:url";
import { join, dirname, resolve } from "node:path";

const [kind, pkg, dir, variant] = process.argv.slice(2);
const json = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
if (variant) {
  const here = dirname(fileURLToPath(import.meta.url));
  const v = JSON.parse(readFileSync(join(here, "variants.json"), "utf8")).find((v) => v.name === variant);
  if (!v) throw new Error(`no variant ${variant}`);
  Object.assign(json, v.patch ?? {});
  json.added_tokens.push(...(v.added ?? []));
}
const config = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));

let encode, decode;
if (kind === "js") {
  const { Tokenizer } = await import(pathToFileURL(resolve(pkg, "dist", "tokenizers.mjs")).href);
  const tok = new Tokenizer(json, config);
  encode = async (text, special) => tok.encode(text, { add_special_tokens: special }).ids;
  decode = async (ids) =>
    ids.length === 0 ? "" : tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
} else if (kind === "rs") {
  const { Tokenizer } = createRequire(import.meta.url)(resolve(pkg, "index.js"));
  const tok = Tokenizer.fromString(JSON.stringify(json));
  encode = async (text, special) => (await tok.encode(text, null, { addSpecialTokens: special })).getIds();
  decode = async (ids) => tok.decode(ids, false);
} else {
  throw new Error(`unknown reference ${kind}`);
}
const out = [];
for (const line of readFileSync(0, "utf8").split("\n")) {
  if (line === "") continue;
  const text = JSON.parse(line);
  const ids = Array.from(await encode(text, true));
  const plain = Array.from(await encode(text, false));
  const pieces = [];
  for (const id of plain) pieces.push(await decode([id]));
  out.push(JSON.stringify({ ids, plain, text: await decode(ids), plain_text: await decode(plain), pieces }));
}
process.stdout.write(out.join("\n") + "\n");
