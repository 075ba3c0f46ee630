// Hello-world CGI program with Go's net/http/cgi: one request per process.
// Build: go build -o hello-go-cgi hello-go-cgi.go
package main

import (
	"log"
	"net/http"
	"net/http/cgi"
)

func main() {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "12")
		w.Write([]byte("Hello World\n"))
	})
	if err := cgi.Serve(h); err != nil {
		log.Fatal(err)
	}
}
