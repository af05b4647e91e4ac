// Command etcdbench drives a running etcd cluster with Put requests from a
// number of concurrent clients for a fixed time per concurrency level and
// prints, for each level, the requests committed per second and the p50 and
// p99 latency of a Put, as one RESULT line that scripts/bench-ledger.sh
// reads beside the fedtune ledger's figures.
//
// It lives in its own Go module so that the fedtune module does not take on
// etcd's dependency tree.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "comma-separated client endpoints")
	concs := flag.String("conc", "1,16,256", "comma-separated numbers of concurrent clients")
	duration := flag.Duration("duration", 10*time.Second, "measured time per concurrency level")
	warmup := flag.Duration("warmup", time.Second, "unmeasured time before each level")
	valueSize := flag.Int("value-size", 512, "bytes per value (match the ledger's signed tx size)")
	perConn := flag.Int("clients-per-conn", 32, "concurrent clients sharing one gRPC connection")
	caFile := flag.String("cacert", "", "with -cert and -key: dial with TLS, trusting this CA (PEM)")
	certFile := flag.String("cert", "", "client certificate (PEM) for TLS")
	keyFile := flag.String("key", "", "client key (PEM) for TLS")
	flag.Parse()
	var tlsCfg *tls.Config
	if *caFile != "" || *certFile != "" || *keyFile != "" {
		var err error
		if tlsCfg, err = clientTLS(*caFile, *certFile, *keyFile); err != nil {
			fmt.Fprintln(os.Stderr, "etcdbench:", err)
			os.Exit(1)
		}
	}
	if err := run(strings.Split(*endpoints, ","), tlsCfg, *concs, *duration, *warmup, *valueSize, *perConn); err != nil {
		fmt.Fprintln(os.Stderr, "etcdbench:", err)
		os.Exit(1)
	}
}

// clientTLS loads a client certificate and the CA that signed the
// servers' certificates.
func clientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" || certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("TLS needs -cacert, -cert and -key")
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s: no PEM certificate", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{cert}}, nil
}

func run(endpoints []string, tlsCfg *tls.Config, concs string, duration, warmup time.Duration, valueSize, perConn int) error {
	var levels []int
	for _, s := range strings.Split(concs, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("bad -conc entry %q", s)
		}
		levels = append(levels, n)
	}
	value := make([]byte, valueSize)
	if _, err := rand.Read(value); err != nil {
		return err
	}
	maxConns := (slices.Max(levels) + perConn - 1) / perConn
	clients := make([]*clientv3.Client, maxConns)
	for i := range clients {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   endpoints,
			TLS:         tlsCfg,
			DialTimeout: 5 * time.Second,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			return fmt.Errorf("connect to %v: %w", endpoints, err)
		}
		defer c.Close()
		clients[i] = c
	}
	ctx := context.Background()
	// Wait for the cluster to accept writes.
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := clients[0].Put(cctx, "etcdbench/ready", "1")
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not writable: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, conc := range levels {
		if warmup > 0 {
			if _, _, err := drive(ctx, clients, conc, perConn, warmup, value); err != nil {
				return err
			}
		}
		lats, elapsed, err := drive(ctx, clients, conc, perConn, duration, value)
		if err != nil {
			return err
		}
		slices.Sort(lats)
		fmt.Printf("RESULT system=etcd conc=%d ops=%d secs=%.2f tps=%.1f p50_ms=%.3f p99_ms=%.3f\n",
			conc, len(lats), elapsed.Seconds(), float64(len(lats))/elapsed.Seconds(),
			ms(pct(lats, 50)), ms(pct(lats, 99)))
	}
	return nil
}

// drive runs conc workers issuing synchronous Puts for d and returns every
// latency.
func drive(ctx context.Context, clients []*clientv3.Client, conc, perConn int, d time.Duration, value []byte) ([]time.Duration, time.Duration, error) {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		all      []time.Duration
		firstErr error
	)
	start := time.Now()
	stop := start.Add(d)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[w/perConn]
			var lats []time.Duration
			var err error
			for i := 0; time.Now().Before(stop); i++ {
				key := fmt.Sprintf("bench/%04d/%09d", w, i)
				t0 := time.Now()
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err = c.Put(cctx, key, string(value))
				cancel()
				if err != nil {
					break
				}
				lats = append(lats, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lats...)
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("put: %w", err)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		log.Printf("etcdbench: %v", firstErr)
		return nil, 0, firstErr
	}
	return all, time.Since(start), nil
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
