// goproxy: the reverse proxy llama-swap is built on (net/http/httputil.ReverseProxy) in front
// of one upstream, with nothing else. The benchmark measures it beside llamaswap, on the same
// machine and in the same run, as the reference for what a proxy hop costs there.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
)

func main() {
	upstream := flag.String("upstream", "http://127.0.0.1:8081", "upstream base URL")
	flag.Parse()
	target, err := url.Parse(*upstream)
	if err != nil {
		log.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{MaxIdleConnsPerHost: 1024, MaxIdleConns: 1024}
	proxy.FlushInterval = -1 // stream every write, as llama-swap does for SSE
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	log.Fatal(http.Serve(ln, proxy))
}
