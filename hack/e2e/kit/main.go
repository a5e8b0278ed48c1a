// Command kit is a tiny multi-call binary for the e2e harness (hack/e2e-cluster.sh). It is
// the sandbox ("pause") image of the e2e cluster's containerd and a general test image
// (pipes.local/kit:e2e) for pods in e2e tests, and the harness runs it on the host to
// check that cluster DNS answers. Static, standard library only.
//
//	kit pause                          wait for SIGTERM/SIGINT (the pod sandbox)
//	kit serve ADDR [TEXT]              HTTP server on ADDR answering TEXT (default: hostname)
//	kit get URL                        print the body of an HTTP GET (exit 1 on error or non-2xx)
//	kit post URL JSON                  the same for a POST of a JSON body
//	kit resolve [--server IP:PORT] NAME  print the addresses NAME resolves to (--server: ask
//	                                   only IP:PORT, whatever /etc/resolv.conf says)
//	kit cat FILE                       print FILE
//	kit sleep SECONDS                  sleep, then exit 0
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "pause":
		waitSignal()
	case "serve":
		if len(args) < 1 {
			usage()
		}
		text := ""
		if len(args) > 1 {
			text = strings.Join(args[1:], " ")
		} else {
			text, _ = os.Hostname()
		}
		serve(args[0], text)
	case "get":
		if len(args) != 1 {
			usage()
		}
		exitOn(get(args[0]))
	case "post":
		if len(args) != 2 {
			usage()
		}
		exitOn(post(args[0], args[1]))
	case "resolve":
		server := ""
		if len(args) == 3 && args[0] == "--server" {
			server, args = args[1], args[2:]
		}
		if len(args) != 1 {
			usage()
		}
		exitOn(resolve(server, args[0]))
	case "cat":
		if len(args) != 1 {
			usage()
		}
		b, err := os.ReadFile(args[0])
		exitOn(err)
		_, _ = os.Stdout.Write(b)
	case "sleep":
		if len(args) != 1 {
			usage()
		}
		s, err := strconv.ParseFloat(args[0], 64)
		exitOn(err)
		time.Sleep(time.Duration(s * float64(time.Second)))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kit pause | serve ADDR [TEXT] | get URL | post URL JSON | resolve [--server IP:PORT] NAME | cat FILE | sleep SECONDS")
	os.Exit(2)
}

func exitOn(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "kit:", err)
		os.Exit(1)
	}
}

func waitSignal() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}

func serve(addr, text string) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintln(w, text)
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		waitSignal()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	fmt.Printf("serving on %s\n", addr)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		exitOn(err)
	}
}

func get(url string) error {
	cl := &http.Client{Timeout: 5 * time.Second}
	r, err := cl.Get(url)
	if err != nil {
		return err
	}
	return printBody(r)
}

// post sends a JSON body and prints the answer (exit 1 on error or non-2xx).
func post(url, body string) error {
	cl := &http.Client{Timeout: 5 * time.Second}
	r, err := cl.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	return printBody(r)
}

func printBody(r *http.Response) error {
	defer func() { _ = r.Body.Close() }()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	_, _ = os.Stdout.Write(b)
	if r.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", r.Request.URL, r.Status)
	}
	return nil
}

func resolve(server, name string) error {
	res := net.DefaultResolver
	if server != "" {
		res = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			d := net.Dialer{Timeout: 2 * time.Second}
			return d.DialContext(ctx, network, server)
		}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := res.LookupHost(ctx, name)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		// Not dnsErr itself: with --server it names resolv.conf's nameserver, not the one asked.
		return fmt.Errorf("%s: NXDOMAIN", name)
	}
	if err != nil {
		return err
	}
	fmt.Println(strings.Join(addrs, "\n"))
	return nil
}
