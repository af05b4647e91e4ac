// Package chat renders a conversation with a model's chat template the way
// Hugging Face transformers' apply_chat_template does.
//
// It owns reading the chat_template of a model folder's
// tokenizer_config.json and rendering it; it does not tokenize. The
// template is Jinja, run by a copy of github.com/ardanlabs/jinja
// (internal/jinja), which compiles with the options transformers uses
// (trim_blocks and lstrip_blocks on).
//
// # Loading
//
// Load(dir) reads dir/tokenizer_config.json; Parse decodes its bytes. The
// chat_template field is either one string or a list of named templates
// ({"name": …, "template": …}); from a list the one named "default" is taken
// (Options.Name picks another). A config without a template gives
// ErrNoTemplate, so a caller can fall back to plain text.
//
// The special tokens of the config (bos_token, eos_token, unk_token,
// pad_token, sep_token, cls_token, mask_token, each a string or an
// {"content": …} object, and additional_special_tokens) become template
// variables, as transformers' special_tokens_map does.
//
// # Rendering
//
//	t, err := chat.Load(modelDir)
//	text, err := t.Render([]chat.Message{
//		{Role: "system", Content: "Be brief."},
//		{Role: "user", Content: "Hi"},
//	}, chat.Options{AddGenerationPrompt: true})
//
// The template sees messages (a list of {role, content}),
// add_generation_prompt, tools and documents (None, as transformers passes
// them when not given), the special tokens, raise_exception(msg) (which
// fails the render with a *TemplateError carrying msg) and
// strftime_now(format) (Python strftime on Options.Now, or the wall clock),
// plus any Options.Vars (date_string, tools, …), as keyword arguments of
// apply_chat_template are. The rendered text holds the special tokens as
// text; tokenize it without adding special tokens again, as transformers
// does.
//
// # Limits
//
// A chat template ships inside a published checkpoint, so whoever
// published it chooses code that every node loading the model runs. The
// template runs in a copy of the evaluator (internal/jinja) that bounds
// each render by Limits: steps (nodes, expressions, loop iterations and
// the size of every value walked), output bytes (of the text and of any
// one string), bytes built in all, and nesting depth (recursion included);
// a source over MaxSourceBytes or nested deeper than the parser allows
// does not compile. A render past a limit fails with a *LimitError naming
// the limit. Parse renders a short conversation under DefaultLimits, so a
// template that runs away is refused when a model is loaded or imported;
// every later render (serving, training data, evaluation) is bounded too.
// As in transformers' sandbox, a template cannot change a list or dict in
// place (list.append, dict.update, …) nor store a namespace inside a
// container.
//
// Expected renderings in testdata/expected.json come from Hugging Face's
// @huggingface/jinja (the Jinja of transformers.js), produced by
// scripts/chat-fixtures; the tests compare against them and download
// nothing.
package chat
