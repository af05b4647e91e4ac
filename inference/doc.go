// Package inference is the inference node's role: it serves a model through
// the HTTP API that OpenAI's clients already speak, and nothing else of the
// network's roles.
//
// It owns:
//   - Server (NewServer), the HTTP API: GET /v1/models, POST /v1/completions
//     and POST /v1/chat/completions, streamed as server-sent events when a
//     request asks for stream: true; errors in OpenAI's error JSON; limits on
//     the request body, the prompt, concurrent and queued requests and time;
//     optional bearer-token auth; Prometheus metrics at /metrics; structured
//     logs;
//   - the guards of a node other sites and greedy clients can reach:
//     generation requests must have Content-Type application/json (a
//     browser sends no cross-site POST with it unasked), a node reached on a
//     loopback address answers only its own Host names and
//     Config.AllowHosts (no DNS rebinding), prompts are rendered and
//     tokenized only when the queue has room and by at most MaxPreparing
//     requests at once, and Listen with HTTPServer caps connections per
//     remote IP (429 with Retry-After) and the headers' time and size;
//   - the request decoder (DecodeRequest) and the response and chunk types;
//   - Generator, the seam between the API and a decoder: BatcherGenerator
//     on model/engine's Batcher (key/value cache, continuous batching) for a
//     CacheDevice (the Host; model/engine/cudadev's GPU in fedcuda builds),
//     EngineGenerator on its Runner for any other Device;
//   - Model (LoadModel), a served model: its id and digest, Generator,
//     tokenizer and ChatTemplate. Server.Swap replaces the served model
//     atomically: requests in flight finish on the model they started on,
//     which is closed when the last of them ends;
//   - ChatTemplate, how chat messages become a prompt: TemplateChat, the
//     model folder's own template (model/chat), or PlainChat ("role:
//     content" lines, then "assistant:") for a model without one;
//   - Receipter, the hook that gives every answer a receipt (header
//     Fedtune-Receipt, the body's "receipt" field, the last chunk of a
//     stream and the stream's trailer): Signer signs package receipt's
//     envelope with the node's ledger key; NoReceipts gives none;
//   - Lineage, the served model's history on the ledger (rounds with their
//     contributors and eval loss, datasets with licences) as GET
//     /v1/fedtune/lineage answers it: Model.Lineage when the node follows a
//     ledger, else only the model's digest with "standalone": true;
//   - the page at / (embedded static HTML, JS and CSS under page/, no
//     external fetches): a chat box that streams from /v1/chat/completions,
//     each answer's receipt decoded from its DSSE envelope, and the lineage
//     with the eval loss of each round drawn as an SVG plot.
//
// Use: m, err := LoadModel(dir, adapterDir, id, engine.NewHost(), 16); s :=
// NewServer(m, Config{...}); s.HTTPServer().Serve(s.Listen(ln)). The
// fedtune serve command does this.
package inference
