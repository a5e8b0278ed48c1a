// Command vend is the sidecar that gives a workload its credentials: it authenticates to
// the backend API with the pod's projected ServiceAccount token, keeps the credentials
// current through a long poll, serves them on loopback with the backend API's own routes
// and writes them as files into a shared memory volume.
//
//	vend [flags]          run (see -h; every flag has an environment-variable twin)
//	vend probe [--listen ADDR] [--path /readyz]
//	                      exit 0 if the sidecar answers 200 (for exec probes: the
//	                      sidecar listens on loopback only, out of the kubelet's reach)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pipes-dev/pipes-operator/internal/apiclient"
	"github.com/pipes-dev/pipes-operator/internal/memlimit"
	"github.com/pipes-dev/pipes-operator/internal/sidecar"
	"github.com/pipes-dev/pipes-operator/internal/vendspec"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "probe" {
		os.Exit(probe(os.Args[2:]))
	}
	// The sidecar runs in every workload pod and its live heap is a few hundred KiB:
	// collecting at 50% growth instead of 100% keeps its resident memory low (under
	// 15 MiB in BenchmarkLocalRead) for little CPU. GOGC, when set, still decides.
	memlimit.Apply(50)
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "vend:", err)
		var usage usageError
		if errors.As(err, &usage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError is a bad flag value; it exits 2.
type usageError struct{ error }

type options struct {
	apiURL, caFile, caData, tokenFile, credentials, listen, dir string
	metricsListen                                               string
	once                                                        bool
	watchTimeout, maxBackoff, forbiddenGrace                    time.Duration
	fileGID                                                     int
}

// flagWithEnv registers a string flag whose default comes from an environment variable.
func flagWithEnv(fs *flag.FlagSet, p *string, name, env, def, usage string) {
	if v, ok := os.LookupEnv(env); ok {
		def = v
	}
	fs.StringVar(p, name, def, usage+" (env "+env+")")
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("vend", flag.ContinueOnError)
	flagWithEnv(fs, &o.apiURL, "api-url", "PIPES_API_URL", "", "backend API base URL, e.g. https://pipes-api.pipes-system.svc")
	flagWithEnv(fs, &o.caFile, "ca-file", "PIPES_CA_FILE", "", "PEM CA bundle that signs the backend API's certificate; re-read when it changes, so a rotated CA is followed (injection mounts it from a ConfigMap)")
	flagWithEnv(fs, &o.caData, "ca-data", "PIPES_CA_DATA", "", "the same CA bundle, inline; fixed for the life of the process")
	flagWithEnv(fs, &o.tokenFile, "token-file", "PIPES_TOKEN_FILE", "/var/run/secrets/pipes.dev/serviceaccount/token", "projected ServiceAccount token, re-read on every request")
	flagWithEnv(fs, &o.credentials, "credentials", "PIPES_CREDENTIALS", "", "credentials to vend: PROVIDER:USER_ID[@ORGANIZATION_ID], comma-separated")
	flagWithEnv(fs, &o.listen, "listen", "PIPES_LISTEN", "127.0.0.1:8299", "loopback address to serve on")
	flagWithEnv(fs, &o.metricsListen, "metrics-listen", "PIPES_METRICS_LISTEN", "", "also serve /metrics, and nothing else, on this address (e.g. :9299) for Prometheus; empty: only on --listen")
	flagWithEnv(fs, &o.dir, "dir", "PIPES_DIR", "/var/run/pipes", "directory (a memory volume) for credential files; empty writes none")
	once := os.Getenv("PIPES_ONCE")
	fs.BoolVar(&o.once, "once", once == "true" || once == "1", "fetch once, write files and exit, for Jobs' init containers (env PIPES_ONCE)")
	timeout := envOr("PIPES_WATCH_TIMEOUT", "30s")
	fs.Func("watch-timeout", "long-poll duration, 1s to 60s (env PIPES_WATCH_TIMEOUT; default 30s)", func(v string) error { timeout = v; return nil })
	maxBackoff := envOr("PIPES_MAX_BACKOFF", "30s")
	fs.Func("max-backoff", "longest wait between retries after a failure, 1s to 5m: how long the sidecar may take to notice the backend API is back (env PIPES_MAX_BACKOFF; default 30s)", func(v string) error { maxBackoff = v; return nil })
	grace := envOr("PIPES_FORBIDDEN_GRACE", sidecar.DefaultForbiddenGrace.String())
	fs.Func("forbidden-grace", "how long the backend API must keep answering 403 before the credentials are withdrawn; a restarting API server denies for a few seconds (env PIPES_FORBIDDEN_GRACE; default "+sidecar.DefaultForbiddenGrace.String()+")", func(v string) error { grace = v; return nil })
	gid := envOr("PIPES_FILE_GID", "-1")
	fs.Func("file-gid", "group given read access to credential files; -1 keeps the process's (env PIPES_FILE_GID)", func(v string) error { gid = v; return nil })
	if err := fs.Parse(args); err != nil {
		return nil, usageError{err}
	}
	var err error
	if o.watchTimeout, err = time.ParseDuration(timeout); err != nil || o.watchTimeout < time.Second || o.watchTimeout > time.Minute {
		return nil, usageError{fmt.Errorf("--watch-timeout %q: want a duration from 1s to 60s", timeout)}
	}
	if o.maxBackoff, err = time.ParseDuration(maxBackoff); err != nil || o.maxBackoff < time.Second || o.maxBackoff > 5*time.Minute {
		return nil, usageError{fmt.Errorf("--max-backoff %q: want a duration from 1s to 5m", maxBackoff)}
	}
	if o.forbiddenGrace, err = time.ParseDuration(grace); err != nil || o.forbiddenGrace < 0 || o.forbiddenGrace > 10*time.Minute {
		return nil, usageError{fmt.Errorf("--forbidden-grace %q: want a duration from 0s to 10m", grace)}
	}
	if o.fileGID, err = strconv.Atoi(gid); err != nil || o.fileGID < -1 {
		return nil, usageError{fmt.Errorf("--file-gid %q: want a group id, or -1", gid)}
	}
	if o.apiURL == "" || !strings.HasPrefix(o.apiURL, "https://") {
		return nil, usageError{fmt.Errorf("--api-url %q: want the backend API's https:// URL", o.apiURL)}
	}
	if (o.caFile == "") == (o.caData == "") {
		return nil, usageError{errors.New("--ca-file or --ca-data: set exactly one, the CA bundle of the backend API")}
	}
	if o.tokenFile == "" {
		return nil, usageError{errors.New("--token-file: required (the pod's projected ServiceAccount token)")}
	}
	host, _, err := net.SplitHostPort(o.listen)
	if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
		return nil, usageError{fmt.Errorf("--listen %q: want a loopback address such as 127.0.0.1:8299; credentials are never served beyond the pod", o.listen)}
	}
	if o.metricsListen != "" {
		_, port, err := net.SplitHostPort(o.metricsListen)
		_, listenPort, _ := net.SplitHostPort(o.listen)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 {
			return nil, usageError{fmt.Errorf("--metrics-listen %q: want an address with a port, such as :9299", o.metricsListen)}
		}
		if port == listenPort {
			return nil, usageError{fmt.Errorf("--metrics-listen %q: port %s is --listen's, which serves credentials; choose another", o.metricsListen, port)}
		}
	}
	return o, nil
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func run(args []string) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	refs, err := vendspec.Parse(o.credentials)
	if err != nil {
		return usageError{fmt.Errorf("--credentials: %w", err)}
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	httpClient, err := apiHTTPClient(o)
	if err != nil {
		return usageError{err}
	}
	api := apiclient.New(o.apiURL, apiclient.WithHTTPClient(httpClient), apiclient.WithTokenFile(o.tokenFile))
	s := sidecar.New(sidecar.Config{Credentials: refs, Dir: o.dir, WatchTimeout: o.watchTimeout, FileGID: o.fileGID, MaxBackoff: o.maxBackoff, ForbiddenGrace: o.forbiddenGrace}, api, log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if o.once {
		if err := s.Sync(ctx, false); err != nil {
			return err
		}
		log.Info("credentials written; exiting (--once)", "count", len(refs))
		return nil
	}

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	servers := []*http.Server{srv}
	if o.metricsListen != "" {
		// Reachable from the pod network, so it serves the metrics handler alone.
		mln, err := net.Listen("tcp", o.metricsListen)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		msrv := &http.Server{Handler: s.MetricsHandler(), ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, msrv)
		go func() { _ = msrv.Serve(mln) }() // ends with Shutdown below
		log.Info("serving metrics", "listen", mln.Addr().String())
	}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, srv := range servers {
			_ = srv.Shutdown(shutdown)
		}
	}()
	go s.Run(ctx)
	log.Info("serving credentials on loopback", "listen", ln.Addr().String(), "dir", o.dir, "credentials", len(refs))
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

func apiHTTPClient(o *options) (*http.Client, error) {
	// The HTTP timeout outlives the long poll.
	timeout := o.watchTimeout + 15*time.Second
	if o.caFile != "" {
		return apiclient.HTTPClientWithCA(o.caFile, timeout)
	}
	h, err := apiclient.HTTPClientWithCAData([]byte(o.caData), timeout)
	if err != nil {
		return nil, fmt.Errorf("--ca-data: %w", err)
	}
	return h, nil
}

func probe(args []string) int {
	fs := flag.NewFlagSet("vend probe", flag.ContinueOnError)
	listen := fs.String("listen", envOr("PIPES_LISTEN", "127.0.0.1:8299"), "the sidecar's address")
	path := fs.String("path", "/readyz", "path to GET")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + *listen + *path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = resp.Body.Close() }()
	buf := make([]byte, 512)
	n, _ := resp.Body.Read(buf)
	fmt.Fprint(os.Stderr, string(buf[:n]))
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}
