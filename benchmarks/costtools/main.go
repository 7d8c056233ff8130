// costtools: the two helpers of benchmarks/cost_growth.py, standard library only.
//
//	costtools upstream -port N        a fast OpenAI-style upstream: GET /health, and a fixed
//	                                  chat completion for any POST (the proxy, not the
//	                                  upstream, stays the bottleneck)
//	costtools load -url U -model M -c 1 -d 3s
//	                                  keep-alive clients POSTing chat completions; prints one
//	                                  JSON line: n, errors, seconds, rps, p50_ms, p99_ms
//	costtools get -url U -n 50        GETs U n times in a row; prints n, errors, p50_ms, p99_ms
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"
)

const completion = `{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`

func upstream(args []string) {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	port := fs.Int("port", 0, "port to listen on (0: any; printed)")
	fs.Parse(args)
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(*port))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	body := []byte(completion)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodGet {
			w.Write([]byte(`{"status":"ok"}`))
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
	fmt.Fprintln(os.Stderr, http.Serve(ln, handler))
}

type result struct {
	N       int     `json:"n"`
	Errors  int     `json:"errors"`
	Seconds float64 `json:"seconds"`
	RPS     float64 `json:"rps"`
	P50ms   float64 `json:"p50_ms"`
	P99ms   float64 `json:"p99_ms"`
	First   string  `json:"first_error,omitempty"`
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(p*float64(len(sorted)-1))]
}

func client() *http.Client {
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 256, MaxIdleConnsPerHost: 256, DisableCompression: true}}
}

// one request; its latency in ms, or an error.
func once(c *http.Client, method, url string, body []byte) (float64, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	ms := float64(time.Since(start).Microseconds()) / 1000
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return ms, err
}

func report(lat []float64, errs int, first error, seconds float64) {
	sort.Float64s(lat)
	r := result{N: len(lat), Errors: errs, Seconds: seconds, P50ms: percentile(lat, 0.5),
		P99ms: percentile(lat, 0.99)}
	if seconds > 0 {
		r.RPS = float64(len(lat)) / seconds
	}
	if first != nil {
		r.First = first.Error()
	}
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
}

func load(args []string) {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	url := fs.String("url", "", "chat completions URL")
	model := fs.String("model", "m", "model name")
	clients := fs.Int("c", 1, "concurrent keep-alive clients")
	duration := fs.Duration("d", 3*time.Second, "how long to measure")
	warm := fs.Int("warm", 50, "warm-up requests per client, not measured")
	fs.Parse(args)
	body, _ := json.Marshal(map[string]any{"model": *model,
		"messages": []map[string]string{{"role": "user", "content": "hi"}}})
	var mu sync.Mutex
	var lat []float64
	errs := 0
	var first error
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(*duration)
	for i := 0; i < *clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client()
			for j := 0; j < *warm; j++ {
				once(c, http.MethodPost, *url, body)
			}
			mine := make([]float64, 0, 4096)
			for time.Now().Before(deadline) {
				ms, err := once(c, http.MethodPost, *url, body)
				mu.Lock()
				if err != nil {
					errs++
					if first == nil {
						first = err
					}
				}
				mu.Unlock()
				if err == nil {
					mine = append(mine, ms)
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	report(lat, errs, first, time.Since(start).Seconds())
}

func get(args []string) {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	url := fs.String("url", "", "URL to GET")
	n := fs.Int("n", 50, "requests, one after another")
	fs.Parse(args)
	c := client()
	var lat []float64
	errs := 0
	var first error
	once(c, http.MethodGet, *url, nil)
	start := time.Now()
	for i := 0; i < *n; i++ {
		ms, err := once(c, http.MethodGet, *url, nil)
		if err != nil {
			errs++
			if first == nil {
				first = err
			}
			continue
		}
		lat = append(lat, ms)
	}
	report(lat, errs, first, time.Since(start).Seconds())
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: costtools upstream|load|get [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "upstream":
		upstream(os.Args[2:])
	case "load":
		load(os.Args[2:])
	case "get":
		get(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}
