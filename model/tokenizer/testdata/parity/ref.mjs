// ref.mjs: the reference side of the tokenizer parity test.
//
//   node ref.mjs TOKENIZERS_MJS MODEL_DIR < corpus.jsonl
//
// TOKENIZERS_MJS is dist/tokenizers.mjs of npm @huggingface/tokenizers;
// MODEL_DIR holds tokenizer.json and tokenizer_config.json. Every input
// line is a JSON string; every output line is
// {"ids":[…],"plain":[…],"text":"…","plain_text":"…"}: the ids with and
// without special tokens and their decodings (special tokens kept, no
// clean-up of tokenization spaces, as Hugging Face's tokenizers decodes).
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const [mjs, dir] = process.argv.slice(2);
const { Tokenizer } = await import(pathToFileURL(mjs).href);
const json = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
const config = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
const tok = new Tokenizer(json, config);
const decode = (ids) =>
  ids.length === 0 ? "" : tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
const out = [];
for (const line of readFileSync(0, "utf8").split("\n")) {
  if (line === "") continue;
  const text = JSON.parse(line);
  const ids = tok.encode(text, { add_special_tokens: true }).ids;
  const plain = tok.encode(text, { add_special_tokens: false }).ids;
  out.push(JSON.stringify({ ids, plain, text: decode(ids), plain_text: decode(plain) }));
}
process.stdout.write(out.join("\n") + "\n");
