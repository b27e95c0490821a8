// Package dockertest runs graftkv as a multi-host cluster: every node is a
// container of the image deploy/build-image.sh builds (FROM scratch, no
// pull), on user-defined bridge networks, and faults come from Docker
// itself: docker kill (SIGKILL), docker pause (the whole host frozen),
// docker network disconnect (a host cut off from its peers), graceful
// stops and restarts, a member replaced on a wiped volume, and a rolling
// upgrade to a newly built image. Clients run in the test process and reach
// each node through its HTTP port, published on 127.0.0.1 only: nothing
// leaves the machine.
//
//	go test ./deploy/dockertest             # a few minutes, image build included
//	go test ./deploy/dockertest -v -run TestRollingUpgrade
//
// The tests need a working `docker info`. Without one they skip, saying
// why; .ci/run says so too. In -short mode they skip.
//
// A cluster's nodes share one internal network (no way out), "raft", where
// they find each other by name (n1:7000), and each node has a network of
// its own that carries its published HTTP port. Cutting a node off its
// peers disconnects only its raft network, so clients still reach it, as
// they would a host whose link to the other hosts failed. (Nodes sharing a
// second network would break that: Docker's DNS answers a container's host
// name on every network, so n1 could resolve to an address there.) The
// test's HTTP client dials http://nX:8000 through nX's published port, so
// it follows the cluster's 307 redirects like a client inside the network.
//
// Every container, network, volume and image the tests create carries the
// labels graft.test=<run id> and graft.test.owner=<host>:<pid>; each test
// removes what it made when it ends, failed or not, and the run starts by
// removing what a dead earlier run (its owner process is gone) left
// behind. The tests run one after another: they share two CPU cores with
// the clusters they start.
//
// Flags go after the package:
//
//	-docker.logs       print every container's log at the end of its test, not only a failed test's
//	-docker.seed=N     replay TestFaultsLinearizable's fault schedule and client choices
package dockertest
