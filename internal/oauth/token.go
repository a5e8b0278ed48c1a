package oauth

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// Token is an OAuth credential as stored (encrypted) in the account's credential Secret.
type Token struct {
	AccessToken  string    `json:"access_token"`
	TokenType    string    `json:"token_type,omitempty"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"`
	// Scopes are the scopes the provider granted.
	Scopes []string `json:"scopes"`
}

// ParseToken reads a stored token.
func ParseToken(b []byte) (*Token, error) {
	var t Token
	if err := json.Unmarshal(b, &t); err != nil || t.AccessToken == "" {
		return nil, errors.New("the stored OAuth credential is not a token")
	}
	return &t, nil
}

// Marshal is the stored form; the caller clears it after sealing.
func (t *Token) Marshal() []byte {
	b, _ := json.Marshal(t) //nolint:gosec // G117: the plaintext that is sealed into the credential Secret, nothing else
	return b
}

// ExpiresWithin reports whether the access token expires within d (never, without an expiry).
func (t *Token) ExpiresWithin(now time.Time, d time.Duration) bool {
	return !t.Expiry.IsZero() && t.Expiry.Before(now.Add(d))
}

// MissingScopes are the scopes of want the token was not granted.
func (t *Token) MissingScopes(want []string) []string {
	missing := []string{}
	for _, s := range want {
		if !slices.Contains(t.Scopes, s) {
			missing = append(missing, s)
		}
	}
	return missing
}

// fromOAuth2 reads x/oauth2's token: the granted scopes from its "scope" field (RFC 6749
// 5.1, space- or comma-separated), or the requested ones when the provider says none
// (granted as requested). A refresh that returns no refresh token keeps the previous one.
func fromOAuth2(t *oauth2.Token, requested []string, previous *Token) *Token {
	out := &Token{AccessToken: t.AccessToken, TokenType: t.TokenType, RefreshToken: t.RefreshToken, Expiry: t.Expiry.UTC()}
	if out.RefreshToken == "" && previous != nil {
		out.RefreshToken = previous.RefreshToken
	}
	if scope, ok := t.Extra("scope").(string); ok && strings.TrimSpace(scope) != "" {
		out.Scopes = strings.FieldsFunc(scope, func(r rune) bool { return r == ' ' || r == ',' })
	} else if previous != nil {
		out.Scopes = slices.Clone(previous.Scopes)
	} else {
		out.Scopes = slices.Clone(requested)
	}
	if out.Scopes == nil {
		out.Scopes = []string{}
	}
	return out
}
