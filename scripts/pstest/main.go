// pstest-server runs Google's in-memory Pub/Sub server (pstest, from the Go client module)
// for hookstream's tests: the full gRPC API (topics, subscriptions, publish, pull, message
// ordering), no persistence, no authentication.
//
// Usage: pstest-server [-port N] [-topic projects/P/topics/T]...
// [-subscription projects/P/subscriptions/S=projects/P/topics/T]...
//
// The topics and subscriptions given (subscriptions with message ordering) exist from the
// moment it answers, so a test can restart a server under a client without that client ever
// seeing them missing. It prints its address as the last line of stdout once it listens,
// then serves until it is killed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	port := flag.Int("port", 18085, "TCP port on 127.0.0.1")
	var topics, subscriptions []string
	flag.Func("topic", "a topic to create, projects/P/topics/T", func(v string) error {
		topics = append(topics, v)
		return nil
	})
	flag.Func("subscription", "a subscription to create, NAME=TOPIC", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("%q is not NAME=TOPIC", v)
		}
		subscriptions = append(subscriptions, v)
		return nil
	})
	flag.Parse()
	server := pstest.NewServerWithPort(*port)
	ctx := context.Background()
	for _, t := range topics {
		if _, err := server.GServer.CreateTopic(ctx, &pb.Topic{Name: t}); err != nil {
			fmt.Fprintf(os.Stderr, "creating topic %s: %v\n", t, err)
			os.Exit(1)
		}
	}
	for _, s := range subscriptions {
		name, topic, _ := strings.Cut(s, "=")
		sub := &pb.Subscription{Name: name, Topic: topic, AckDeadlineSeconds: 10, EnableMessageOrdering: true}
		if _, err := server.GServer.CreateSubscription(ctx, sub); err != nil {
			fmt.Fprintf(os.Stderr, "creating subscription %s: %v\n", name, err)
			os.Exit(1)
		}
	}
	fmt.Println(server.Addr)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	_ = server.Close()
}
