// Package dye follows chosen items through the opskit pipeline, as packet
// colouring does in a telecom switch: an operator sets a dye rule on every
// daemon (`configd fleet dye 'endpoint=web01,metric=cpu.idle' --for 10m`),
// and each daemon that sees an item matching the rule logs it at info with
// dye=ID and keeps a trace record of the hop in a bounded ring buffer.
// `configd fleet trace ID` gathers the records of every daemon and prints
// the item's journey in time order.
//
// # What matches
//
//   - A point (metric.Point) matches a rule naming an endpoint, a metric
//     and/or tags when every one given is equal: collector at intake and on
//     transfer's acknowledgement, transfer at intake and on each next hop's
//     acknowledgement (judge, peers, sinks), judge at evaluation.
//   - An alert derived from a dyed point: judge adds the annotation
//     opskit_dye=ID to the alerts of a series matching a rule, and alarm
//     recognises that annotation at intake and when the notification is
//     delivered. No rule is needed on alarm for that.
//   - A log line matches a rule naming a path (the file's path, equal)
//     and/or a substring (contains), and no metric or tags; an endpoint, when
//     given, must be the collector's host.
//   - A request through the ratelimit gateway carrying the header
//     X-Opskit-Dye: ID, with no rule at all.
//
// # Admin endpoints (behind the admin token, on every daemon)
//
//	POST   /admin/dye        {"id":"d1","match":{"endpoint":"web01","metric":"cpu.idle"},"until":"2026-01-02T15:04:05Z"}
//	                         sets or replaces rule d1 ("for":"10m" instead of until;
//	                         no id: one is made up); answers the rule
//	GET    /admin/dye        the rules in force, as a JSON array
//	DELETE /admin/dye/{id}   removes a rule
//	GET    /admin/trace?id=D the trace records of dye D as JSON lines: time (when
//	                         the item entered the hop), dye, daemon, instance,
//	                         hop, item, duration_seconds (the time it spent there)
//
// # Cost
//
// With no rule in force, asking whether an item is dyed is one atomic
// pointer load. Expired rules drop out by themselves. The ring buffer holds
// the newest DefaultCapacity records; dye log lines beyond 100 a second are
// counted, not written.
package dye
