// Package coordinator owns federated jobs and their rounds: job files
// (configs/jobs/*.yaml) decoded strictly, defaulted and validated, with
// the config digest that RoundOpened records; the trainer pool (ledger
// members with role trainer that answered a signed join challenge) and the
// deterministic selection of a round's trainers; and the round lifecycle
// as a pure state machine. The gRPC services, the trainer node and devnet
// drive it from outside.
//
// # Jobs
//
// ParseJob and LoadJob start from DefaultJob, decode YAML over it with
// unknown keys refused (errors name file and line), and call Validate,
// which reports every violation at once under its YAML path
// ("rounds: must be ≥ 1", "strategy.params.beta_1: not a parameter of
// fedavg"). Strategy parameters are checked by aggregator.New itself, so
// the coordinator and the aggregator never disagree. (*Job).Digest is the
// SHA-256 of Canonical, a compact JSON form independent of formatting.
//
// # Rounds
//
// Machine (New, or Recover after a restart) is driven like etcd-raft's
// Node: the driver feeds events to Step (JobStarted, Tick, MembersChanged,
// TrainerJoined/Left, UpdateArrived/Invalid, AggregationDone/Failed,
// TxCommitted/Rejected) and carries out the returned Ready (ledger
// transactions to sign and submit, TrainTasks to send, an aggregation
// (round.Task) to run, Wake, Done). It does no I/O and reads no clock. A round's life:
//
//	waiting     until JobStarted and at least trainers.min eligible trainers;
//	            then Select picks them from (job seed, round) → RoundOpened
//	opening     until the ledger confirms RoundOpened (TxCommitted), then a
//	            TrainTask to every selected trainer that is joined (and again
//	            to one that rejoins while it owes an update)
//	collecting  invalid updates → UpdateRejected; aggregate as soon as every
//	            selected trainer answered or left with ≥ min valid updates,
//	            or at the deadline with ≥ min; fail at the deadline with
//	            fewer, or at once when everyone answered and fewer are valid
//	aggregating AggregationDone → UpdateRejected for the aggregator's
//	            rejections, then RoundCommitted (RoundFailed if fewer than min
//	            remain); AggregationFailed → RoundFailed
//	closing     once the ledger confirms, the next round opens on the new
//	            model (a failed round keeps the base; failed rounds count
//	            towards rounds); after the last, Done.
//
// A rejected RoundOpened is retried at the next Tick with the same round
// number, MaxOpenAttempts times in a row at most; a rejected RoundCommitted
// becomes a RoundFailed. A round's deadline counts from the latest time
// the machine knows (drivers Tick about once a second).
//
// Recover rebuilds the machine from the job's rounds as the ledger holds
// them; an open round is re-collected from the updates on the ledger (see
// Recover), so a restarted coordinator submits what an uninterrupted one
// would have.
//
// # Service
//
// Before a job's machine starts, Service registers the job on the ledger
// (ledger.JobRegistered, coordinator key): its ledger.RoundRecipe (Job.Recipe:
// strategy with effective parameters, privacy, compression, trainer bounds,
// the aggregator's ID, a LoRA job's initial adapter digest, which the
// adapter's blob in the artifact store matches; MaxSamples from
// trainers.max_samples or train.local_steps × train.batch). A resumed job
// must find the same recipe from the same coordinator. Job IDs belong to
// the first coordinator that registers them: LaunchJob refuses a name
// another coordinator registered (AlreadyExists, naming it), before it
// writes anything to the ledger. The machine's commits carry the
// recipe's parameters (Config.Recipe), which the ledger then enforces; DP
// noise is the aggregator's, from crypto/rand, never seeded by the job.
//
// Service is the I/O around the machine: it ticks it about once a second,
// signs and submits the txs of each Ready on the ledger in order (RoundOpened
// with the coordinator key; UpdateRejected, RoundCommitted and RoundFailed
// with the aggregator key, each through a ledger/client Signer that keeps
// the signer's nonce) and reports every outcome back as TxCommitted or TxRejected; it sends
// tasks to joined trainers over the Tasks stream of the Coordinator gRPC
// service (api/coordinator/v1), and runs the aggregation in-process over the
// artifact store, storing the new model there before recording it. Trainers
// join by signing a challenge with their ledger key over a TLS link that
// proves the same key (internal/tlsid); a key that is not a trainer member
// of the ledger is refused. Server is one process: Coordinator service,
// artifact service and aggregator on one listener (`fedtune coordinator
// start`). A restarted Server recovers its unfinished job from the ledger.
//
// The artifact service is guarded by the ledger (service_upload.go): only
// active members upload, within the limits of the config's artifacts
// section; downloads follow DownloadAllowed, which gives an update (found
// with the ledger's updates-by-digest query) only to its first submitter,
// the job's designated aggregators, auditors and admins, and every other
// blob to members; an update is every member's only as the model its own
// round committed (ModelFreesUpdate: one contributor), never through a
// model record of another round or coordinator. Upload and Status tell a
// caller that a blob is stored only if it may download it (else its upload
// runs as for an absent blob). Challenge answers anyone, so one caller (its
// TLS key, else its host) holds at most MaxChallengesPerCaller unanswered
// challenges and all together MaxChallenges, the oldest dropped first. A
// trainer key holds at most MaxSessionsPerTrainer Join sessions (a new one
// replaces the oldest that never streamed). A job's eval.data is read only
// from the artifact store (a digest that is no trainer's update) or inside
// the config's eval_data_root (service_eval.go).
//
// The aggregator role is the Aggregator interface: round.Local (package
// aggregator/round) runs in the process as above; when the server config
// names a remote aggregator (aggregator: {address, id}), RemoteAggregator
// calls a standalone one (`fedtune aggregator start`, package
// aggregator/node) over
// fedtune.aggregator.v1, which fetches the inputs from this artifact
// service, uploads the new model and signs the aggregator-role txs with its
// own key; the coordinator then holds no aggregator key and admits the
// aggregator only by the configured key ID with ledger role aggregator
// (AggregatorVerifier). Either way the Service reports every outcome to
// the machine the same way.
package coordinator
