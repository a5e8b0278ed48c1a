// Package controllers holds one reconciler per kind: Provider, OrganizationProvider and
// ConnectedAccount, plus the keyset reconciler that reloads the key-encryption keyset
// when it is rotated.
package controllers
