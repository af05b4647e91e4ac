package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are one node's Prometheus collectors, on a registry of its own so
// that several nodes can run in one process.
type metrics struct {
	reg           *prometheus.Registry
	blocksApplied prometheus.Counter
	txsCommitted  prometheus.Counter
	txsRejected   prometheus.Counter
	// refused counts what this node refused before it reached a block, and
	// proposals its FSM refused, by reason: "tx_<code>" (a tx refused by
	// admission, code as in ledger.Code), "rate_limited",
	// "submit_too_large", "submit_too_many", "proposal_not_voter",
	// "proposal_clock_skew", "read_rate_limited",
	// "read_rate_limited_non_members", "streams".
	refused *prometheus.CounterVec
	// reads counts the read calls served (Query, GetTx, GetBlock,
	// StreamBlocks, Status), by rpc and caller kind ("node", "member",
	// "non_member").
	reads        *prometheus.CounterVec
	applyLatency prometheus.Histogram
	height       prometheus.Gauge
	isLeader     prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		blocksApplied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedtune_ledger_blocks_applied_total",
			Help: "Blocks applied by this node's FSM.",
		}),
		txsCommitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedtune_ledger_txs_committed_total",
			Help: "Transactions committed in blocks applied by this node.",
		}),
		txsRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedtune_ledger_txs_rejected_total",
			Help: "Transactions submitted through this node that were rejected.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedtune_ledger_refused_total",
			Help: "Txs and requests refused before a proposal, and proposals refused by the FSM, by reason.",
		}, []string{"reason"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedtune_ledger_reads_total",
			Help: "Read calls admitted (Query, GetTx, GetBlock, StreamBlocks, Status), by rpc and caller kind.",
		}, []string{"rpc", "caller"}),
		applyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fedtune_ledger_apply_seconds",
			Help:    "Time from raft.Apply of a block proposal to its result, on the leader.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		height: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fedtune_ledger_height",
			Help: "Height of the last block applied.",
		}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fedtune_ledger_is_leader",
			Help: "1 while this node is the raft leader.",
		}),
	}
	m.reg.MustRegister(m.blocksApplied, m.txsCommitted, m.txsRejected, m.refused, m.reads, m.applyLatency, m.height, m.isLeader,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
