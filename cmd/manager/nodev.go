//go:build !dev

package main

import "errors"

// runDev is only in binaries built with -tags dev (make run): the embedded control plane
// links envtest, which has no place in the production image.
func runDev([]string) error {
	return errors.New("this manager was built without the dev command: use `make run`, or go run -tags dev ./cmd/manager dev")
}
