// Package instruct reads instruction-tuning data in the JSONL shapes people
// publish it in, renders each record as a model's chat template would, and
// turns it into token ids with a loss mask and packed training windows.
//
// It owns instruction records, their rendering into masked token sequences,
// and packing. Plain-text datasets, manifests and their digests stay in
// package datasets; chat templates in model/chat; tokenizers in
// model/tokenizer. Like datasets it imports no model package: a chat
// template comes in as a ChatFunc and a tokenizer as an Encoder, and the
// program wires them (eval.InstructRenderer).
//
// # Formats
//
// Read detects the format of a file from its first record, and every other
// record must have the same one:
//
//   - messages: {"messages": [{"role": "system"|"user"|"assistant",
//     "content": "…"}, …]}, at least one assistant turn.
//   - alpaca: {"instruction": "…", "input": "…", "output": "…"}, input
//     optional or empty. It becomes a user turn (instruction, then a blank
//     line and input when input is not empty) and an assistant turn (output).
//   - prompt-completion: {"prompt": "…", "completion": "…"}: a user turn and
//     an assistant turn; or prompt and completion both lists of messages, as
//     TRL's conversational form: prompt turns, then completion turns.
//
// Other fields are ignored. Blank lines are skipped, a leading UTF-8 byte
// order mark is ignored. A bad record (bad JSON, a missing or non-string
// field, an unknown role, no assistant turn, a record of another format than
// the file's) is an error naming the file, the line and the field; errors
// wrap ErrFormat.
//
// ReadDataset reads a file as a datasets.Dataset whose samples are the
// records verbatim (Text = the JSON line), so datasets.BuildManifest hashes
// one leaf per record and Dataset.Split divides records; Records decodes
// such samples back.
//
// # Rendering and the loss mask
//
// A Renderer turns a conversation into text and the byte spans of its
// assistant turns. Template renders with a model's chat template (a
// ChatFunc: model/chat's Template.Render) and finds each assistant span by
// rendering prefixes of the conversation, as an incremental renderer does: the span of assistant turn
// i starts where the rendering of turns [0, i) with add_generation_prompt
// ends (that must be a prefix of the whole rendering) and ends where the
// rendering of turns [0, i] stops agreeing with the whole rendering. So the
// span holds the assistant's content and what the template writes after it
// up to the next turn (end-of-turn and EOS tokens), and not the assistant
// header. A template that writes text after a turn whatever
// add_generation_prompt says widens the spans by what that text shares with
// the next turn: the first Llama 3 template ends every rendering with an
// assistant header, so its spans take the next turn's <|start_header_id|>,
// and the last one the whole header.
//
// A program picks Template when the model folder's tokenizer_config.json
// has a chat_template and Plain otherwise; Load reads and encodes a file in
// one call:
//
//	t, err := chat.Load(modelDir)
//	r := instruct.Template{Chat: func(m []instruct.Message, gen bool) (string, error) {
//		cm := make([]chat.Message, len(m))
//		for i := range m {
//			cm[i] = chat.Message(m[i])
//		}
//		return t.Render(cm, chat.Options{AddGenerationPrompt: gen})
//	}}
//	examples, format, err := instruct.Load("train.jsonl", r, tok)
//	windows, stats, err := instruct.Pack(examples, seqLen, padID)
//
// Plain is the fallback for models without a chat template: each turn's
// content followed by "\n", the assistant turns (with their "\n") in the
// spans; this is datasets.JoinPrompt's layout for one exchange.
//
// Encode tokenizes the whole rendering once and marks token k as an
// assistant token when it lies in a span. Token boundaries come from
// tokenizing prefixes of the text: the tokens of text[:p] that agree with
// the tokens of the whole text are the ones before byte p. The Encoder must
// not add special tokens of its own: the template writes BOS/EOS as text,
// which the tokenizer's added tokens turn into their ids (as transformers
// tokenizes a rendered chat with add_special_tokens=False).
//
// # Packing
//
// Pack lays examples one after another into windows of seqLen+1 tokens
// (inputs and shifted targets, as datasets.Windows) and records, for every
// token, the document it belongs to (Segments, 1-based within the window, 0
// for padding). Window.LossMask trains target t only when it is an
// assistant token of the same document as input t, Window.Positions restart
// at 0 at each document, and attention must let token q see token k only
// when k <= q and Segments[q] == Segments[k] (Window.Attends). A Batcher
// deals windows in datasets.Batcher's seeded order; NewBatch lays a batch
// out as rows of tokens, loss weights, segments and positions, a Batch that
// converts to model.Batch (model/engine's Trainer.StepBatch trains on it).
package instruct
