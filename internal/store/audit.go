package store

import "context"

type auditKey struct{}

// WithAudit returns a context that makes the next mutation called with it
// append e to the audit log in the mutation's own transaction: the change
// and its record commit together or not at all. A mutation that fails
// writes no entry. The entry's At defaults to the store's clock.
func WithAudit(ctx context.Context, e AuditEntry) context.Context {
	return context.WithValue(ctx, auditKey{}, e)
}

// auditFrom returns the audit entry WithAudit put in ctx.
func auditFrom(ctx context.Context) (AuditEntry, bool) {
	e, ok := ctx.Value(auditKey{}).(AuditEntry)
	return e, ok
}
