// Hello-world FastCGI responder with Go's net/http/fcgi. fcgi.Serve(nil, h) accepts on
// the listening socket on fd 0 (as mod_fcgid starts it) and serves connections
// concurrently, one goroutine each. Build: go build -o hello-go-fcgi hello-go-fcgi.go
package main

import (
	"log"
	"net/http"
	"net/http/fcgi"
)

var body = []byte("Hello World\n")

func main() {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "12")
		w.Write(body)
	})
	if err := fcgi.Serve(nil, h); err != nil {
		log.Fatal(err)
	}
}
