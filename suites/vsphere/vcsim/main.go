// vcsim for the vSphere suites: govmomi's simulator (a vCenter inventory
// with its SOAP API on /sdk and the CIS REST API on /rest) on one address,
// over HTTPS with a self-signed certificate, as vCenter serves.
//
// Debian's golang-github-vmware-govmomi-dev ships govmomi's packages but not
// the vcsim command, so this is the part of vcsim's main that the suites
// need, built with Debian's Go in GOPATH mode:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o vcsim suites/vsphere/vcsim/main.go
//	./vcsim -l 127.0.0.1:8989
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	// The CIS REST endpoints (sessions, tagging, content libraries).
	_ "github.com/vmware/govmomi/vapi/simulator"
)

func main() {
	listen := flag.String("l", "127.0.0.1:8989", "address to listen on")
	user := flag.String("username", "user", "the one user SOAP logins accept")
	password := flag.String("password", "pass", "that user's password")
	flag.Parse()

	model := simulator.VPX()
	if err := model.Create(); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim:", err)
		os.Exit(1)
	}
	// With credentials of its own (not govmomi's default ones), vcsim's
	// SOAP login refuses any other; its REST login takes any user anyway.
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *password)}
	model.Service.TLS = new(tls.Config)
	model.Service.RegisterEndpoints = true
	server := model.Service.NewServer()
	// Tests wait for this line; it carries the address actually bound.
	fmt.Printf("vcsim listening on %s\n", server.URL.Host)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	server.Close()
	model.Remove()
}
