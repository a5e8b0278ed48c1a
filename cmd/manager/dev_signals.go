//go:build dev

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// devSignals returns a context that is cancelled, starting an orderly stop, by the first
// of: SIGINT (Ctrl-C), SIGTERM (kill, or make forwarding one), SIGHUP (the terminal
// closed), SIGPIPE, or the reader of stdout or stderr going away (`make run | tee log`
// with tee gone, which no write would reveal while the terminal is quiet). Further
// signals do not cut the orderly stop short (make forwards the SIGTERM its process group
// also got), except a second Ctrl-C, which calls force.
//
// controller-runtime's ctrl.SetupSignalHandler is not enough: it ignores SIGHUP and
// SIGPIPE, and exits at once on a second signal, leaving the control plane running.
func devSignals(force func()) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	go watchReaderGone(os.Stdout, 1, sigs)
	go watchReaderGone(os.Stderr, 2, sigs)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "\n%v: stopping the manager and the embedded control plane (Ctrl-C again to force)…\n", sig)
		cancel()
		for sig := range sigs {
			if sig == os.Interrupt {
				force()
			}
		}
	}()
	return ctx
}

// watchReaderGone sends SIGPIPE to sigs when f (file descriptor fd) is a pipe whose
// reader has closed it.
func watchReaderGone(f *os.File, fd int32, sigs chan<- os.Signal) {
	info, err := f.Stat()
	if err != nil || info.Mode()&os.ModeNamedPipe == 0 {
		return
	}
	fds := []unix.PollFd{{Fd: fd}} // no events: POLLERR, a pipe's "no readers left", is always reported
	for {
		n, err := unix.Poll(fds, -1)
		switch {
		case errors.Is(err, unix.EINTR):
		case err != nil:
			return
		case n > 0 && fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0:
			sigs <- syscall.SIGPIPE
			return
		}
	}
}
