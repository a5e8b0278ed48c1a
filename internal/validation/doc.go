// Package validation owns the rules for Provider, OrganizationProvider and ConnectedAccount,
// for the API keys users supply, for pods that ask for the vend sidecar, and for what the
// backend API accepts. The webhooks, the reconcilers and the backend API all call these
// functions, so one rule gives one message everywhere. (Conditions that report state, not
// a rule a request broke, are written where the state is known.)
//
// Every rule returns a field.Error whose Field is the offending path and whose Detail is
// a whole sentence that starts with that path and says what to do, so Message can print
// it unchanged.
package validation
