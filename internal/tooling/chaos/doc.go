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
// checking that each drains and exits 0 in time. As root it also fills
// the disk under a nats-server's store and under PostgreSQL's data
// directory (each a tmpfs of the run's own) to ENOSPC for a few seconds,
// then frees it, restarting a nats-server that takes no notice after and
// starting a PostgreSQL that PANICked and shut down, as an operator
// would (decision 34). After each PostgreSQL fault it measures how soon
// the load generator and every worker write again.
//
// # Partitions
//
// As root, a run has a network of its own: a network namespace for each
// nats-server, each worker, the load generator and the Toxiproxy that
// carries the workers' links, each joined to the host by a veth pair,
// the host routing between them. A partition is a set of policy routing
// rules (ip rule add from A to B blackhole) that drop the packets
// between two of them in silence, and deleting the rules heals it: one
// worker and NATS, one worker and PostgreSQL, the load and NATS, and a
// nats-server and everything (in a cluster, the notice stream's leader,
// from its peers too). After each heal the suite measures how soon the
// worker writes snapshots again or notices are stored again. The rules
// and namespaces are removed at the end, whatever happens.
//
// # Checks
//
// Afterwards the suite reads the load generator's record of saves
// ([ParseRecord]), checks that every failed one failed during a
// PostgreSQL outage ([UnexplainedFailures]) or with PostgreSQL's
// disk-full error while its disk was full ([UnexplainedByDiskFull]),
// and compares the successful ones with the event store ([CheckEvents]: failed saves that committed
// anyway are in doubt, not lost); it reads the audit table that a
// trigger fills with every snapshot row version written and checks that
// no snapshot ever moved backwards ([CheckAudit]); it runs snapshotter
// verify on every aggregate; and it checks that every aggregate converged
// to within the threshold of its head. [Run] does all of it; the pure parts are exported
// so they can be tested without services.
package chaos
