// Package validation owns the rules for Provider, OrganizationProvider and ConnectedAccount
// and for the API keys users supply. The validating webhooks, the reconcilers and the
// backend API all call these functions, so one rule gives one message everywhere.
//
// Every rule returns a field.Error whose Field is the offending path and whose Detail is
// a whole sentence that starts with that path and says what to do, so Message can print
// it unchanged.
package validation
