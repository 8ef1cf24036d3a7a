// Package rollout schedules deployments: it decides, tick by tick, which
// devices of each active deployment are offered the update next.
//
// [Scheduler] is the model. Each call to [Scheduler.Tick] reads every
// active deployment from the store and applies its strategy once: it
// pauses a deployment whose failures in a phase exceed the threshold,
// gives failed devices their retries, finishes a deployment whose devices
// are all final and, inside a maintenance window, starts the pending
// devices of every phase that is open, up to MaxConcurrent in progress.
// [AddDevices] splits a deployment's devices into its phases.
//
// The one rule: the scheduler keeps no state of its own. Everything it
// decides follows from the store and the clock, so Tick is idempotent and
// may run every few seconds and after a restart. Run one scheduler per
// store: two would not overshoot MaxConcurrent, but could both audit the
// same pause or finish.
package rollout
