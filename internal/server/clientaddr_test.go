package server

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestClientAddr(t *testing.T) {
	proxies := []string{"10.0.0.0/8", "172.16.0.0/12", "2001:db8:ffff::/48"}
	tests := []struct {
		name    string
		trusted []string
		remote  string
		xff     []string // X-Forwarded-For lines, in the order received
		want    string   // empty for no address
	}{
		{name: "the peer is the client",
			remote: "192.0.2.1:1234", want: "192.0.2.1"},
		{name: "X-Forwarded-For is ignored without trusted proxies",
			remote: "192.0.2.1:1234", xff: []string{"203.0.113.9"}, want: "192.0.2.1"},
		{name: "X-Forwarded-For is ignored from an untrusted peer", trusted: proxies,
			remote: "192.0.2.1:1234", xff: []string{"203.0.113.9"}, want: "192.0.2.1"},
		{name: "a trusted proxy names the client", trusted: proxies,
			remote: "10.0.0.2:1234", xff: []string{"203.0.113.9"}, want: "203.0.113.9"},
		{name: "a chain of trusted proxies names the client", trusted: proxies,
			remote: "10.0.0.2:1234", xff: []string{"203.0.113.9, 172.16.0.5,10.1.1.1"},
			want: "203.0.113.9"},
		{name: "a chain may come in several header lines", trusted: proxies,
			remote: "10.0.0.2:1234", xff: []string{"203.0.113.9", "172.16.0.5"},
			want: "203.0.113.9"},
		{name: "entries the client wrote left of itself are ignored", trusted: proxies,
			remote: "10.0.0.2:1234", xff: []string{"198.51.100.1, 10.9.9.9", "203.0.113.9"},
			want: "203.0.113.9"},
		{name: "a trusted proxy without the header is the client", trusted: proxies,
			remote: "10.0.0.2:1234", want: "10.0.0.2"},
		{name: "a chain of trusted hops only ends at its first", trusted: proxies,
			remote: "10.0.0.2:1234", xff: []string{"172.16.0.5, 10.1.1.1"},
			want: "172.16.0.5"},
		{name: "a malformed entry stops at the last trusted hop", trusted: proxies,
			remote: "10.0.0.2:1234", xff: []string{"203.0.113.9, unknown, 10.1.1.1"},
			want: "10.1.1.1"},
		{name: "an empty entry stops at the last trusted hop", trusted: proxies,
			remote: "10.0.0.2:1234", xff: []string{"203.0.113.9,,10.1.1.1"}, want: "10.1.1.1"},
		{name: "an empty header stops at the proxy", trusted: proxies,
			remote: "10.0.0.2:1234", xff: []string{"203.0.113.9", ""}, want: "10.0.0.2"},
		{name: "an entry may carry a port", trusted: proxies,
			remote: "10.0.0.2:1234", xff: []string{"203.0.113.9:4711"}, want: "203.0.113.9"},
		{name: "an IPv6 entry may carry a port", trusted: proxies,
			remote: "10.0.0.2:1234", xff: []string{"[2001:db8::9]:4711"}, want: "2001:db8::9"},
		{name: "an IPv6 proxy names an IPv4 client", trusted: proxies,
			remote: "[2001:db8:ffff::2]:1234", xff: []string{"203.0.113.9"},
			want: "203.0.113.9"},
		{name: "a header over the cap stops at the last trusted hop", trusted: proxies,
			remote: "10.0.0.2:1234",
			xff:    []string{"203.0.113.9, " + strings.Repeat("10.0.0.1, ", 200) + "10.0.0.3"},
			want:   "10.0.0.1"},
		{name: "an entry cut by the cap is not taken for an address", trusted: proxies,
			remote: "10.0.0.2:1234",
			xff:    []string{"192.3.4.5," + strings.Repeat("10.0.0.1,", 112) + "10.0.0.1"},
			want:   "10.0.0.1"},
		{name: "an entry longer than the cap stops at the proxy", trusted: proxies,
			remote: "10.0.0.2:1234", xff: []string{strings.Repeat("1", 100_000)},
			want: "10.0.0.2"},
		{name: "the cap leaves the right end readable", trusted: proxies,
			remote: "10.0.0.2:1234",
			xff:    []string{strings.Repeat("x", 100_000) + ", 203.0.113.9"},
			want:   "203.0.113.9"},
		{name: "an IPv4-mapped peer is its IPv4 address",
			remote: "[::ffff:192.0.2.1]:1234", want: "192.0.2.1"},
		{name: "an IPv4-mapped entry is its IPv4 address", trusted: proxies,
			remote: "10.0.0.2:1234", xff: []string{"::ffff:203.0.113.9"},
			want: "203.0.113.9"},
		{name: "an IPv4-mapped proxy prefix matches IPv4 peers",
			trusted: []string{"::ffff:10.0.0.0/104"}, remote: "10.0.0.2:1234",
			xff: []string{"203.0.113.9"}, want: "203.0.113.9"},
		{name: "an IPv4-mapped peer matches an IPv4 proxy prefix", trusted: proxies,
			remote: "[::ffff:10.0.0.2]:1234", xff: []string{"203.0.113.9"},
			want: "203.0.113.9"},
		{name: "a zone is dropped",
			remote: "[fe80::1%eth0]:1234", want: "fe80::1"},
		{name: "a bare IP address as the peer",
			remote: "192.0.2.1", want: "192.0.2.1"},
		{name: "a peer without an address is no client",
			remote: "@", xff: []string{"203.0.113.9"}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var trusted []netip.Prefix
			for _, s := range tt.trusted {
				trusted = append(trusted, netip.MustParsePrefix(s))
			}
			r := httptest.NewRequest("POST", "/", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}

			got := clientAddr(r, normalPrefixes(trusted))
			if tt.want == "" {
				assert.False(t, got.IsValid(), got)
				return
			}
			assert.Equal(t, tt.want, got.String())
		})
	}
}

func TestClientKey(t *testing.T) {
	tests := []struct {
		name string
		addr netip.Addr
		want string
	}{
		{"an IPv4 client by its address", netip.MustParseAddr("192.0.2.1"),
			"addr:192.0.2.1/32"},
		{"an IPv6 client by its /64", netip.MustParseAddr("2001:db8:1:2:3:4:5:6"),
			"addr:2001:db8:1:2::/64"},
		{"another address in the same /64", netip.MustParseAddr("2001:db8:1:2::ffff"),
			"addr:2001:db8:1:2::/64"},
		{"no address", netip.Addr{}, "addr:unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, clientKey(tt.addr))
		})
	}
}
