// Package chaos is evsnap's chaos suite on real processes: it runs the
// snapshotter and example-app binaries against a PostgreSQL cluster and a
// nats-server of its own, injects faults while the load generator saves,
// and then checks that nothing was lost and no snapshot went wrong.
//
// The program is cmd/evsnap-chaos (make chaos, make chaos-short); see
// docs/chaos.md for what it does and what each check means.
//
// # Faults
//
// While example-app load drives steady traffic, a schedule derived from a
// seed ([NewSchedule]) kills workers with SIGKILL and restarts them,
// restarts the NATS server on the same port and store directory,
// terminates the workers' PostgreSQL connections with
// pg_terminate_backend, restarts PostgreSQL (fast shutdown), shuts it
// down immediately and SIGKILLs its postmaster (internal/tooling/pgcluster;
// only a cluster the suite started), and stops workers with SIGTERM,
// checking that each drains and exits 0 in time. After each PostgreSQL
// fault it measures how soon the load generator and every worker write
// again.
//
// # Checks
//
// Afterwards the suite reads the load generator's record of saves
// ([ParseRecord]), checks that every failed one failed during a
// PostgreSQL outage ([UnexplainedFailures]), and compares the successful
// ones with the event store ([CheckEvents]: failed saves that committed
// anyway are in doubt, not lost); it reads the audit table that a
// trigger fills with every snapshot row version written and checks that
// no snapshot ever moved backwards ([CheckAudit]); it runs snapshotter
// verify on every aggregate; and it checks that every aggregate converged
// to within the threshold of its head. [Run] does all of it; the pure parts are exported
// so they can be tested without services.
package chaos
