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
// DrawFixed, UpdateVerdict, SuspensionsRead, Cancel, TxCommitted/Rejected)
// and carries out the returned Ready (ledger transactions to sign and
// submit, TrainTasks to send, an aggregation (round.Task) to run,
// suspensions to read, trainers to tell a round Ended, Wake, Done). It does no I/O and reads no clock. A round's life:
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
// Cancel (cancel.go) stops the job in any state: the machine submits a
// ledger.JobCancelled, which the ledger records once and which fails the
// open round; until its outcome it takes only the outcomes of the txs it
// submitted before (a round's close that lands first counts) and ignores
// the rest, then ends (JobResult.Cancelled) and names the open round's
// trainers to tell (Ready.Ended). The Service's CancelJob admits the
// job's launcher (the TLS key of its LaunchJob), the coordinator's key or
// an active admin member, and waits for the outcome; the job is then
// marked done (a restart does not resume it, nor one the ledger shows
// cancelled) and the next launch runs.
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
// Service is the Coordinator gRPC service (api/coordinator/v1) and the
// driver around the machine, nothing more: it turns typed inputs (the gRPC
// calls, its clock's ticks, the tx queue's outcomes, the aggregator's
// results, the spot-check verdicts it reads from the ledger) into the
// machine's events under one lock, and hands each Ready to its parts. Each
// part is a type of its own, with its own small lock or none, that never
// calls back into the driver:
//
//	jobStore       (jobstore.go) the active job's files in ServiceConfig.Dir
//	               (saved at launch, marked done at the end, reloaded on a
//	               restart) and a job's preparation: base model, initial
//	               adapter and canonical config into the artifact store,
//	               ModelRegistered and JobRegistered on the ledger, the
//	               machine built (Recover from the ledger's rounds on a
//	               restart)
//	txQueue        (txqueue.go) signs and submits the Ready's txs in order,
//	               RoundOpened with the coordinator key and UpdateRejected,
//	               RoundCommitted and RoundFailed through the Aggregator,
//	               retries a tx whose fate is unknown, and reports every
//	               outcome (TxCommitted or TxRejected)
//	sessionTable   (sessions.go) queues tasks for joined trainers, sent over
//	               the Tasks stream
//	proveRelay     (proverelay.go) carries auditors' questions to trainers
//	evaluator      (evaluator.go) the queue of held-out evaluations of
//	               committed models, one at a time, results kept in Dir
//	scorer         (scorer.go, evaldata.go) runs one evaluation with package
//	               eval, reading eval.data only as the job may name it, and
//	               scores each contributor's update alone into the
//	               RoundEvaluated the driver queues
//	artifactGuard  (artifactguard.go) who may upload to and download from
//	               the artifact store, as the ledger says
//	Metrics        (metrics.go) Prometheus counters of the spot checks:
//	               drawn updates, verdicts by kind, unverified timeouts,
//	               suspensions
//
// Each part reaches the ledger through a narrow interface of its own,
// all met by Ledger (NodeLedger over a node's client); time is a
// clock.Clock. So the service runs in tests on the ledger FSM in memory
// (ledgertest.Twin) and a fake clock: no socket, no sleep.
//
// A job's preparation registers it on the ledger (ledger.JobRegistered,
// coordinator key) before its machine starts: its ledger.RoundRecipe
// (Job.Recipe: strategy with effective parameters, privacy, compression,
// trainer bounds, the aggregator's ID, a LoRA job's initial adapter
// digest, which the adapter's blob in the artifact store matches;
// MaxSamples from trainers.max_samples or train.local_steps ×
// train.batch). A resumed job must find the same recipe from the same
// coordinator. Job IDs belong to the first coordinator that registers
// them: LaunchJob refuses a name another coordinator registered
// (AlreadyExists, naming it), before it writes anything to the ledger.
// The machine's commits carry the recipe's parameters (Config.Recipe),
// which the ledger then enforces; DP noise is the aggregator's, from
// crypto/rand, never seeded by the job.
//
// Trainers join by signing a challenge with their ledger key over a TLS
// link that proves the same key (internal/tlsid); a key that is not a
// trainer member of the ledger is refused. Server is one process:
// Coordinator service, artifact service and aggregator on one listener
// (`fedtune coordinator start`), and /metrics on metrics_address when
// set. A restarted Server recovers its unfinished job from the ledger.
//
// A round flows one way: the trainer records its UpdateSubmitted on the
// ledger, then calls SubmitUpdate with the height it committed at; the
// Service reads the round at least at that height (the node it reads
// waits until it has applied it, bounded) and feeds the machine the
// update as the ledger records it.
//
// # Rules and where they are checked
//
// The ledger (ledger/fsm/exec.go) is the authority on what is recorded; the
// machine decides what the coordinator asks for and when. Each rule is
// checked in one place, except where noted:
//
//   - Who is selected: the machine decides (Select over the job seed and
//     round); the ledger checks only RoundOpened's form (current trainer
//     members, a count within the recipe's bounds).
//   - An update comes from a selected trainer: the ledger, for
//     UpdateSubmitted (CodeNotSelected). The machine checks it too
//     (ErrNotSelected), because a trainer's failure (UpdateInvalid from
//     SubmitUpdate with an error) never reaches the ledger: it is the only
//     check that input gets. For an update, which the Service reads from
//     the ledger, the machine's check never fires.
//   - An update is in time: the ledger, against block time
//     (CodeDeadlinePassed); only what it accepted counts. The machine
//     does not judge updates by time: its deadline decides when it stops
//     collecting (aggregate with ≥ min, else fail), a different decision.
//     An update the ledger took after the machine stopped collecting is
//     rejected by the aggregator (UpdateRejected) before the commit, which
//     the ledger accepts only if it accounts for every update.
//   - One update per trainer and round, and one trainer per update: the
//     ledger (CodeAlreadyExists). The machine makes a redelivery (the same
//     digest again, as a restarted trainer reports) a no-op; a second,
//     other digest from one trainer is an invariant it asserts, which a
//     driver that reads updates from the ledger never trips.
//   - A RoundOpened's deadline lies after its block: the ledger.
//   - An update's samples within its dataset's and the recipe's bounds, its
//     dataset registered by its trainer: the ledger.
//   - An update's dataset is one the job admits (datasets.manifests): the
//     machine, which rejects the update on the ledger (UpdateRejected); the
//     recipe does not carry the job's manifests.
//   - When a job with verify closes a round's submissions
//     (SubmissionsClosed): the ledger refuses a close before the round's
//     deadline (block time) while a selected trainer that may still
//     submit has no update. The machine closes before its deadline only
//     once every selected trainer's update arrived (a trainer's reported
//     failure or its leaving keeps the round open to the deadline), and
//     retries a refused close at the next tick, MaxCloseAttempts times,
//     since its clock and the block time may differ.
//   - A job with verify: verify.quorum at most the verifiers in verify.by,
//     and train.local_steps at most ledger.MaxDisclosedSteps: ParseJob
//     (and the ledger, at JobRegistered, for the quorum); its updates,
//     disclosing every step's digest, fit the chain's max_tx_bytes: the
//     ledger at JobRegistered (so launch fails with the sizes); every
//     update discloses exactly verify.steps step digests: the ledger, and
//     the trainer refuses to submit one it cannot disclose
//     (trainer.Disclose).
//   - A trainer a verifier's rejection suspended is not selected: the
//     ledger refuses a RoundOpened that selects one, and the machine of a
//     job with verify selects by the ledger's suspensions, read for each
//     round before it opens (Ready.ReadSuspensions, SuspensionsRead; read
//     again after a refused RoundOpened), never by its own memory: a
//     rejection that landed after its round failed, or while the
//     coordinator was down, counts as any other.
//
// The artifact service is guarded by the ledger (artifactGuard): only
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
// the config's eval_data_root (scorer.openData).
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
