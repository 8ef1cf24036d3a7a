package bundle

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Algorithm names a signing algorithm.
type Algorithm string

// Supported signing algorithms.
const (
	// Ed25519 signs with Ed25519 (the default for new keys).
	Ed25519 Algorithm = "ed25519"

	// ECDSAP256 signs with ECDSA on NIST P-256 over SHA-256.
	ECDSAP256 Algorithm = "ecdsa-p256"
)

// DefaultAlgorithm is the algorithm GenerateKey uses when given "".
const DefaultAlgorithm = Ed25519

// maxKeyFileSize caps key and keyring files.
const maxKeyFileSize = 1 << 20

// GenerateKey creates a key pair and returns it PEM-encoded. When password
// is non-empty the private key is encrypted with it (scrypt and
// secretbox, in the encrypted sigstore key format cosign also reads).
func GenerateKey(alg Algorithm, password []byte) (privPEM, pubPEM []byte, err error) {
	var priv crypto.Signer
	switch alg {
	case Ed25519, "":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case ECDSAP256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, nil, fmt.Errorf("%w: unsupported algorithm %q", ErrBadKey, alg)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("generate %s key: %w", alg, err)
	}
	return encodeKeyPair(priv, password)
}

func encodeKeyPair(priv crypto.Signer, password []byte) (privPEM, pubPEM []byte, err error) {
	pubPEM, err = cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("encode public key: %w", err)
	}
	if len(password) == 0 {
		privPEM, err = cryptoutils.MarshalPrivateKeyToPEM(priv)
		if err != nil {
			return nil, nil, fmt.Errorf("encode private key: %w", err)
		}
		return privPEM, pubPEM, nil
	}
	der, err := cryptoutils.MarshalPrivateKeyToEncryptedDER(priv,
		cryptoutils.StaticPasswordFunc(password))
	if err != nil {
		return nil, nil, fmt.Errorf("encrypt private key: %w", err)
	}
	return cryptoutils.PEMEncode(cryptoutils.EncryptedSigstorePrivateKeyPEMType, der), pubPEM, nil
}

// Signer signs bundles with one private key.
type Signer struct {
	signer signature.Signer
	pub    crypto.PublicKey
	id     string
}

// LoadSigner parses a PEM private key (PKCS#8, SEC 1, or the encrypted
// sigstore format). password is used only for encrypted keys.
func LoadSigner(privPEM []byte, password []byte) (*Signer, error) {
	block, _ := pem.Decode(privPEM)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrBadKey)
	}
	encrypted := block.Type == string(cryptoutils.EncryptedSigstorePrivateKeyPEMType) ||
		block.Type == "ENCRYPTED COSIGN PRIVATE KEY"
	if encrypted && len(password) == 0 {
		return nil, fmt.Errorf("%w: private key is encrypted and no password was given", ErrBadKey)
	}
	priv, err := cryptoutils.UnmarshalPEMToPrivateKey(privPEM, cryptoutils.StaticPasswordFunc(password))
	if err != nil {
		if encrypted {
			return nil, fmt.Errorf("%w: decrypt private key (wrong password?): %w", ErrBadKey, err)
		}
		return nil, fmt.Errorf("%w: parse private key: %w", ErrBadKey, err)
	}
	cs, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: private key of type %T cannot sign", ErrBadKey, priv)
	}
	return NewSigner(cs)
}

// LoadSignerFile reads and parses a PEM private key file.
func LoadSignerFile(path string, password []byte) (*Signer, error) {
	b, err := readCapped(path, maxKeyFileSize)
	if err != nil {
		return nil, fmt.Errorf("read key %s: %w", path, err)
	}
	s, err := LoadSigner(b, password)
	if err != nil {
		return nil, fmt.Errorf("load key %s: %w", path, err)
	}
	return s, nil
}

// NewSigner wraps an Ed25519 or ECDSA P-256 private key.
func NewSigner(priv crypto.Signer) (*Signer, error) {
	var (
		s   signature.Signer
		err error
	)
	switch k := priv.(type) {
	case ed25519.PrivateKey:
		s, err = signature.LoadED25519Signer(k)
	case *ed25519.PrivateKey:
		s, err = signature.LoadED25519Signer(*k)
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: ECDSA curve %s (want P-256)", ErrBadKey, k.Curve.Params().Name)
		}
		s, err = signature.LoadECDSASigner(k, crypto.SHA256)
	default:
		return nil, fmt.Errorf("%w: unsupported private key type %T", ErrBadKey, priv)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	id, err := KeyID(priv.Public())
	if err != nil {
		return nil, err
	}
	return &Signer{signer: s, pub: priv.Public(), id: id}, nil
}

// KeyID returns the ID of the signer's public key.
func (s *Signer) KeyID() string { return s.id }

// Public returns the signer's public key.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

func (s *Signer) sign(payload []byte) ([]byte, error) {
	sig, err := s.signer.SignMessage(bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("sign with key %s: %w", shortID(s.id), err)
	}
	return sig, nil
}

// KeyID returns the lowercase hex sha256 of the DER (SubjectPublicKeyInfo)
// encoding of pub. Signature manifests carry it to name their key.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("%w: encode public key: %w", ErrBadKey, err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

func shortID(id string) string {
	if len(id) > 16 {
		return id[:16]
	}
	return id
}

// PublicKey is a key trusted to sign bundles.
type PublicKey struct {
	// ID is the key ID (see [KeyID]).
	ID string

	// Algorithm is the key's signing algorithm.
	Algorithm Algorithm

	key      crypto.PublicKey
	verifier signature.Verifier
}

// ParsePublicKey parses one PEM "PUBLIC KEY" block.
func ParsePublicKey(pubPEM []byte) (*PublicKey, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pubPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: parse public key: %w", ErrBadKey, err)
	}
	return NewPublicKey(pub)
}

// NewPublicKey wraps an Ed25519 or ECDSA P-256 public key.
func NewPublicKey(pub crypto.PublicKey) (*PublicKey, error) {
	var (
		v   signature.Verifier
		alg Algorithm
		err error
	)
	switch k := pub.(type) {
	case ed25519.PublicKey:
		alg = Ed25519
		v, err = signature.LoadED25519Verifier(k)
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: ECDSA curve %s (want P-256)", ErrBadKey, k.Curve.Params().Name)
		}
		alg = ECDSAP256
		v, err = signature.LoadECDSAVerifier(k, crypto.SHA256)
	default:
		return nil, fmt.Errorf("%w: unsupported public key type %T", ErrBadKey, pub)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	id, err := KeyID(pub)
	if err != nil {
		return nil, err
	}
	return &PublicKey{ID: id, Algorithm: alg, key: pub, verifier: v}, nil
}

func (k *PublicKey) verify(sig, payload []byte) error {
	return k.verifier.VerifySignature(bytes.NewReader(sig), bytes.NewReader(payload))
}

// Keyring is a set of trusted public keys. The zero Keyring trusts nothing.
type Keyring struct {
	keys []*PublicKey
}

// NewKeyring returns a keyring of the given keys; duplicates are dropped.
func NewKeyring(keys ...*PublicKey) *Keyring {
	kr := &Keyring{}
	for _, k := range keys {
		kr.Add(k)
	}
	return kr
}

// Add adds a key unless a key with the same ID is already present.
func (kr *Keyring) Add(k *PublicKey) {
	if kr.Key(k.ID) == nil {
		kr.keys = append(kr.keys, k)
	}
}

// Keys returns the keys in the order they were added.
func (kr *Keyring) Keys() []*PublicKey {
	return append([]*PublicKey(nil), kr.keys...)
}

// Key returns the key with the given ID, or nil.
func (kr *Keyring) Key(id string) *PublicKey {
	if kr == nil {
		return nil
	}
	for _, k := range kr.keys {
		if k.ID == id {
			return k
		}
	}
	return nil
}

// Len returns the number of keys.
func (kr *Keyring) Len() int {
	if kr == nil {
		return 0
	}
	return len(kr.keys)
}

// ParseKeyring parses one or more concatenated PEM "PUBLIC KEY" blocks.
func ParseKeyring(data []byte) (*Keyring, error) {
	kr := &Keyring{}
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		k, err := ParsePublicKey(pem.EncodeToMemory(block))
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", n, err)
		}
		kr.Add(k)
	}
	if len(bytes.TrimSpace(data)) != 0 {
		return nil, fmt.Errorf("%w: trailing data that is not PEM", ErrBadKey)
	}
	if kr.Len() == 0 {
		return nil, fmt.Errorf("%w: no public key found", ErrBadKey)
	}
	return kr, nil
}

// LoadKeyring reads PEM public key files into one keyring. Each file may
// hold several keys.
func LoadKeyring(paths ...string) (*Keyring, error) {
	if len(paths) == 0 {
		return nil, errors.New("load keyring: no key files given")
	}
	kr := &Keyring{}
	for _, p := range paths {
		b, err := readCapped(p, maxKeyFileSize)
		if err != nil {
			return nil, fmt.Errorf("read keyring %s: %w", p, err)
		}
		k, err := ParseKeyring(b)
		if err != nil {
			return nil, fmt.Errorf("load keyring %s: %w", p, err)
		}
		for _, key := range k.keys {
			kr.Add(key)
		}
	}
	return kr, nil
}

// readCapped reads a whole file of at most limit bytes.
func readCapped(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := readAllCapped(f, limit)
	if err != nil {
		return nil, err
	}
	return b, nil
}
