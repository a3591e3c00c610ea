// The async benchmarks' Go peer: net's goroutine per connection, as Go users write a server.
// Usage: aecho TIMEOUT (seconds; 0 = none). With a timeout, SetReadDeadline before every read
// (the idle-timeout idiom): a connection idle that long is closed. Prints "PORT n", serves
// until killed. Benchmarks/run starts it with GOMAXPROCS=1 under taskset -c 0.
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: aecho TIMEOUT")
		os.Exit(64)
	}
	seconds, err := strconv.ParseFloat(os.Args[1], 64)
	if err != nil || seconds < 0 {
		fmt.Fprintln(os.Stderr, "aecho: TIMEOUT must be a number of seconds ≥ 0")
		os.Exit(64)
	}
	timeout := time.Duration(seconds * float64(time.Second))
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("PORT %d\n", l.Addr().(*net.TCPAddr).Port)
	for {
		c, err := l.Accept()
		if err != nil {
			continue
		}
		go serve(c.(*net.TCPConn), timeout) // TCP_NODELAY is Go's default
	}
}

func serve(c *net.TCPConn, timeout time.Duration) {
	defer c.Close()
	buf := make([]byte, 4096)
	for {
		if timeout > 0 {
			c.SetReadDeadline(time.Now().Add(timeout))
		}
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}
