package cli

import "net"

// DisplayAddr turns a listening address into one a browser can reach:
// an unspecified host, as in ":8080", becomes localhost.
func DisplayAddr(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
