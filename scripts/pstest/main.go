// pstest-server runs Google's in-memory Pub/Sub server (pstest, from the Go client module)
// for hookstream's tests: the full gRPC API (topics, subscriptions, publish, pull, message
// ordering), no persistence, no authentication.
//
// Usage: pstest-server [-port N]. It prints its address as the last line of stdout once it
// listens, then serves until it is killed.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	port := flag.Int("port", 18085, "TCP port on 127.0.0.1")
	flag.Parse()
	server := pstest.NewServerWithPort(*port)
	fmt.Println(server.Addr)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	_ = server.Close()
}
