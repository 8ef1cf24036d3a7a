package server

import (
	"net/http"
	"net/netip"
	"strings"
)

// maxForwardedFor is how many bytes of X-Forwarded-For, from its right
// end, are read to find a client: room for a chain of dozens of proxies,
// and a bound on the work a forged header can cause.
const maxForwardedFor = 1024

// clientAddr returns the address of the client that sent r: its peer's,
// or, when the peer is in a trusted prefix, the one the proxies name in
// X-Forwarded-For. It returns the zero Addr when the peer has no IP
// address, as on a Unix socket.
func clientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer := parseAddr(r.RemoteAddr)
	if !peer.IsValid() || !inPrefixes(trusted, peer) {
		return peer
	}
	return forwardedFor(r.Header.Values("X-Forwarded-For"), peer, trusted)
}

// parseAddr returns the IP address in s, an address with a port (as
// http.Server sets RemoteAddr, and some proxies write X-Forwarded-For)
// or without; the zero Addr if s holds none.
func parseAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return normalAddr(ap.Addr())
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return normalAddr(a)
	}
	return netip.Addr{}
}

// forwardedFor returns the client named by the X-Forwarded-For header
// values that the trusted proxy at peer passed on. Every proxy appends
// the address it received the request from, so the header is read from
// the right: the first address outside the trusted prefixes is the
// client, and everything left of it was written by the client or by
// proxies not trusted, and is ignored. On an entry that is not an
// address, or on reading past maxForwardedFor, the last trusted hop is
// taken for the client, since what lies beyond cannot be believed.
func forwardedFor(values []string, peer netip.Addr, trusted []netip.Prefix) netip.Addr {
	last := peer
	budget := maxForwardedFor
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for {
			if budget <= 0 {
				return last
			}
			start := max(len(v)-budget, 0)
			comma := strings.LastIndexByte(v[start:], ',')
			if comma < 0 && start > 0 {
				return last // the entry runs on past what is read
			}
			entry := v[start+comma+1:]
			budget -= len(entry) + 1
			hop := parseAddr(strings.TrimSpace(entry))
			if !hop.IsValid() {
				return last
			}
			if !inPrefixes(trusted, hop) {
				return hop
			}
			last = hop
			if comma < 0 {
				break
			}
			v = v[:start+comma]
		}
	}
	return last
}

// clientKey returns the key under which the limiter counts the failures
// of the client at addr. An IPv6 client is counted by its /64, since a
// host commonly gets a whole /64 and could take a fresh address from it
// for every request. Clients without an address share one key.
func clientKey(addr netip.Addr) string {
	if !addr.IsValid() {
		return "addr:unknown"
	}
	bits := addr.BitLen()
	if addr.Is6() {
		bits = 64
	}
	p, _ := addr.Prefix(bits) // bits never exceeds the address's length
	return "addr:" + p.String()
}

// normalAddr returns a without a zone, and an IPv4-mapped IPv6 address
// as the IPv4 address it maps, so that a client has one form whichever
// way its address arrived.
func normalAddr(a netip.Addr) netip.Addr {
	return a.WithZone("").Unmap()
}

// normalPrefixes returns prefixes, which must be valid, masked to their
// length and with IPv4-mapped IPv6 prefixes as the IPv4 prefixes they
// map, to match the addresses normalAddr returns.
func normalPrefixes(prefixes []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(prefixes))
	for _, p := range prefixes {
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out
}

// inPrefixes reports whether a is in one of prefixes.
func inPrefixes(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
