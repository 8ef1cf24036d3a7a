package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/rotaupdate/rota/internal/atomicfile"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rotaupdate/rota/bundle"
)

func init() {
	register("bundle create", command{
		usage: "--compatible C --version V [--rollback-index N] --slot CLASS=IMAGE[:FSTYPE]... " +
			"--key K [-o OUT.rota]",
		short: "build and sign a bundle from slot images",
		run:   bundleCreate,
	})
	register("bundle sign", command{
		usage: "--key K IN.rota",
		short: "add a signature to a bundle",
		run:   bundleSign,
	})
	register("bundle verify", command{
		usage: "--keyring PUB[,PUB...] [--metadata-only] IN.rota|REF",
		short: "check signatures and every digest; exit 0 only when the bundle is valid",
		run:   bundleVerify,
	})
	register("bundle inspect", command{
		usage: "[--json] IN.rota|REF",
		short: "show a bundle's metadata without reading its images",
		run:   bundleInspect,
	})
	register("bundle push", command{
		usage: "[--insecure] IN.rota REF",
		short: "upload a bundle and its signatures to an OCI registry",
		run:   bundlePush,
	})
	register("bundle pull", command{
		usage: "[--insecure] REF -o OUT.rota",
		short: "download a bundle and its signatures from an OCI registry",
		run:   bundlePull,
	})
	register("bundle extract", command{
		usage: "--keyring PUB IN.rota|REF --slot CLASS -o IMAGE",
		short: "verify a bundle and write one slot image, decompressed",
		run:   bundleExtract,
	})
}

// listFlag collects a repeatable flag; values may also be comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// repeatFlag collects a repeatable flag without splitting.
type repeatFlag []string

func (r *repeatFlag) String() string     { return strings.Join(*r, " ") }
func (r *repeatFlag) Set(v string) error { *r = append(*r, v); return nil }

func bundleCreate(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bundle create", commands["bundle create"].usage)
	var (
		spec  bundle.Spec
		slots repeatFlag
		keys  listFlag
	)
	fs.StringVar(&spec.Compatible, "compatible", "", "compatible string of the target devices")
	fs.StringVar(&spec.Version, "version", "", "release version (semantic versioning)")
	fs.Uint64Var(&spec.RollbackIndex, "rollback-index", 0, "rollback index (devices refuse lower)")
	fs.StringVar(&spec.Description, "description", "", "free text description")
	fs.StringVar(&spec.MinAgentVersion, "min-agent-version", "", "lowest agent version able to install")
	fs.Var(&slots, "slot", "slot image `CLASS=PATH[:FSTYPE]` (repeatable, in install order); "+
		"a directory is stored as a file tree")
	fs.Var(&keys, "key", "private key `FILE` to sign with (repeatable)")
	out := fs.String("o", "", "output `FILE` (default COMPATIBLE-VERSION.rota)")
	created := fs.String("created", "", "creation time, RFC 3339 (default $SOURCE_DATE_EPOCH or now)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 0:
		return usageErr("unexpected argument %q", pos[0])
	case spec.Compatible == "" || spec.Version == "":
		return usageErr("--compatible and --version are required")
	case len(slots) == 0:
		return usageErr("at least one --slot CLASS=IMAGE is required")
	case len(keys) == 0:
		return usageErr("--key is required: unsigned bundles cannot be installed")
	}
	for _, s := range slots {
		src, err := parseSlotArg(s)
		if err != nil {
			return err
		}
		spec.Images = append(spec.Images, src)
	}
	if spec.Created, err = creationTime(env, *created); err != nil {
		return err
	}
	signers, err := loadSigners(env, keys)
	if err != nil {
		return err
	}
	if *out == "" {
		*out = strings.NewReplacer("/", "_", ":", "_").Replace(spec.Compatible) + "-" +
			bundle.RefName(spec.Version) + ".rota"
	}

	bar := newProgress(env, "compress", -1)
	defer bar.Done()
	var info *bundle.Info
	err = atomicfile.Write(*out, 0o644, func(w io.Writer) error {
		var err error
		info, err = bundle.Create(ctx, w, spec, bundle.CreateOptions{
			Signers:  signers,
			TempDir:  filepath.Dir(*out),
			Progress: bar.Add,
			Total:    bar.SetTotal,
		})
		return err
	})
	bar.Done()
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "wrote %s: version %s for %s, %d bytes, %s\n",
		*out, info.Config.Version, info.Config.Compatible, info.Size, info.Digest)
	return nil
}

// parseSlotArg parses CLASS=PATH[:FSTYPE].
func parseSlotArg(s string) (bundle.ImageSource, error) {
	class, rest, ok := strings.Cut(s, "=")
	if !ok || class == "" || rest == "" {
		return bundle.ImageSource{}, usageErr("--slot %q: want CLASS=PATH[:FSTYPE]", s)
	}
	src := bundle.ImageSource{Class: class, Path: rest}
	if i := strings.LastIndexByte(rest, ':'); i > 0 {
		if _, err := os.Stat(rest); err != nil {
			src.Path, src.Filesystem = rest[:i], rest[i+1:]
		}
	}
	return src, nil
}

func creationTime(env *cliEnv, flagValue string) (time.Time, error) {
	if flagValue != "" {
		t, err := time.Parse(time.RFC3339, flagValue)
		if err != nil {
			return time.Time{}, usageErr("--created %q: %v", flagValue, err)
		}
		return t, nil
	}
	if s := env.getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
		}
		return time.Unix(n, 0), nil
	}
	return time.Time{}, nil
}

func bundleSign(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bundle sign", commands["bundle sign"].usage)
	var keys listFlag
	fs.Var(&keys, "key", "private key `FILE` (repeatable)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || len(keys) == 0 {
		return usageErr("want --key K and one bundle file")
	}
	signers, err := loadSigners(env, keys)
	if err != nil {
		return err
	}
	info, err := bundle.SignFile(ctx, pos[0], signers...)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "signed %s: %d signatures\n", pos[0], len(info.Signatures))
	return nil
}

// openBundle opens a local file, or a registry reference when src names no
// existing file and does not end in .rota.
func openBundle(ctx context.Context, src string, insecure bool, opts bundle.Options) (
	*bundle.Bundle, error) {
	if _, err := os.Stat(src); err == nil || strings.HasSuffix(src, ".rota") {
		return bundle.Open(src, opts)
	}
	return bundle.OpenRemote(ctx, src, bundle.RemoteOptions{Options: opts, Insecure: insecure})
}

func bundleVerify(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bundle verify", commands["bundle verify"].usage)
	var keyring listFlag
	fs.Var(&keyring, "keyring", "trusted public key `FILE`s (comma-separated or repeated)")
	metaOnly := fs.Bool("metadata-only", false, "check signatures and metadata, not image content")
	insecure := fs.Bool("insecure", false, "allow plain HTTP registries")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || len(keyring) == 0 {
		return usageErr("want --keyring PUB and one bundle")
	}
	kr, err := bundle.LoadKeyring(keyring...)
	if err != nil {
		return err
	}
	bar := newProgress(env, "verify", -1)
	defer bar.Done()
	b, err := openBundle(ctx, pos[0], *insecure, bundle.Options{Progress: bar.Add})
	if err != nil {
		return err
	}
	defer b.Close()
	bar.SetTotal(b.LayerSize())
	sigs, err := b.Verify(kr)
	if err != nil {
		return err
	}
	if !*metaOnly {
		for {
			ir, err := b.NextImage(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			if _, err := io.Copy(io.Discard, ir); err != nil {
				return err
			}
		}
	}
	bar.Done()
	cfg := b.Config()
	what := "metadata and every image"
	if *metaOnly {
		what = "metadata"
	}
	fmt.Fprintf(env.stdout, "valid: %s version %s for %s (%s checked), signed by %s\n",
		b.Digest(), cfg.Version, cfg.Compatible, what, keyIDs(sigs))
	return nil
}

func keyIDs(sigs []bundle.Signature) string {
	ids := make([]string, 0, len(sigs))
	for _, s := range sigs {
		id := s.KeyID
		if len(id) > 16 {
			id = id[:16]
		}
		ids = append(ids, id)
	}
	return strings.Join(ids, ", ")
}

// inspectOutput is the JSON form of "rota bundle inspect".
type inspectOutput struct {
	Digest     string             `json:"digest"`
	Config     bundle.Config      `json:"config"`
	Layers     []inspectLayer     `json:"layers"`
	Signatures []bundle.Signature `json:"signatures"`
}

type inspectLayer struct {
	Class     string `json:"class"`
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

func bundleInspect(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bundle inspect", commands["bundle inspect"].usage)
	asJSON := fs.Bool("json", false, "print JSON")
	insecure := fs.Bool("insecure", false, "allow plain HTTP registries")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("want one bundle file or reference")
	}
	b, err := openBundle(ctx, pos[0], *insecure, bundle.Options{})
	if err != nil {
		return err
	}
	defer b.Close()
	out := inspectOutput{Digest: b.Digest(), Config: b.Config(), Signatures: b.Signatures()}
	for i, l := range b.Layers() {
		out.Layers = append(out.Layers, inspectLayer{
			Class:     out.Config.Images[i].Class,
			MediaType: string(l.MediaType),
			Digest:    l.Digest.String(),
			Size:      l.Size,
		})
	}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	printInspect(env.stdout, out)
	return nil
}

func printInspect(w io.Writer, out inspectOutput) {
	c := out.Config
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "digest:\t%s\n", out.Digest)
	fmt.Fprintf(tw, "compatible:\t%s\n", c.Compatible)
	fmt.Fprintf(tw, "version:\t%s\n", c.Version)
	fmt.Fprintf(tw, "rollback index:\t%d\n", c.RollbackIndex)
	fmt.Fprintf(tw, "created:\t%s\n", c.Created.Format(time.RFC3339))
	if c.Description != "" {
		fmt.Fprintf(tw, "description:\t%s\n", c.Description)
	}
	if c.MinAgentVersion != "" {
		fmt.Fprintf(tw, "min agent version:\t%s\n", c.MinAgentVersion)
	}
	fmt.Fprintf(tw, "format version:\t%d\n", c.FormatVersion)
	tw.Flush()
	fmt.Fprintln(w, "images:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  CLASS\tFSTYPE\tSIZE\tCOMPRESSED\tSHA256")
	for i, im := range c.Images {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%s\n", im.Class, orDash(im.Filesystem), im.Size,
			out.Layers[i].Size, im.SHA256)
	}
	tw.Flush()
	fmt.Fprintf(w, "signatures: %d\n", len(out.Signatures))
	for _, s := range out.Signatures {
		fmt.Fprintf(w, "  key %s  %s\n", orDash(s.KeyID), s.Digest)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bundlePush(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bundle push", commands["bundle push"].usage)
	insecure := fs.Bool("insecure", false, "allow plain HTTP and unverified TLS")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usageErr("want a bundle file and a registry reference")
	}
	b, err := bundle.Open(pos[0], bundle.Options{})
	if err != nil {
		return err
	}
	total := b.LayerSize()
	b.Close()
	bar := newProgress(env, "push", total)
	defer bar.Done()
	info, err := bundle.Push(ctx, pos[0], pos[1], bundle.RemoteOptions{
		Options:  bundle.Options{Progress: bar.Add},
		Insecure: *insecure,
	})
	if err != nil {
		return err
	}
	bar.Done()
	fmt.Fprintf(env.stdout, "pushed %s as %s@%s with %d signatures\n",
		pos[0], pos[1], info.Digest, len(info.Signatures))
	return nil
}

func bundlePull(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bundle pull", commands["bundle pull"].usage)
	out := fs.String("o", "", "output `FILE`")
	insecure := fs.Bool("insecure", false, "allow plain HTTP and unverified TLS")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *out == "" {
		return usageErr("want a registry reference and -o FILE")
	}
	bar := newProgress(env, "pull", -1)
	defer bar.Done()
	b, err := bundle.OpenRemote(ctx, pos[0], bundle.RemoteOptions{
		Options:  bundle.Options{Progress: bar.Add},
		Insecure: *insecure,
	})
	if err != nil {
		return err
	}
	defer b.Close()
	bar.SetTotal(b.LayerSize())
	var info *bundle.Info
	err = atomicfile.Write(*out, 0o644, func(w io.Writer) error {
		info, err = b.Write(ctx, w)
		return err
	})
	if err != nil {
		return err
	}
	bar.Done()
	fmt.Fprintf(env.stdout, "wrote %s: %s, %d bytes, %d signatures\n",
		*out, info.Digest, info.Size, len(info.Signatures))
	return nil
}

func bundleExtract(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bundle extract", commands["bundle extract"].usage)
	var keyring listFlag
	fs.Var(&keyring, "keyring", "trusted public key `FILE`s")
	class := fs.String("slot", "", "slot `CLASS` of the image to extract")
	out := fs.String("o", "", "output `FILE` (- for standard output)")
	insecure := fs.Bool("insecure", false, "allow plain HTTP registries")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || len(keyring) == 0 || *class == "" || *out == "" {
		return usageErr("want --keyring PUB, one bundle, --slot CLASS and -o FILE")
	}
	kr, err := bundle.LoadKeyring(keyring...)
	if err != nil {
		return err
	}
	b, err := openBundle(ctx, pos[0], *insecure, bundle.Options{})
	if err != nil {
		return err
	}
	defer b.Close()
	if _, err := b.Verify(kr); err != nil {
		return err
	}
	ir, err := b.Image(ctx, *class)
	if err != nil {
		return err
	}
	bar := newProgress(env, "extract", ir.Info.Size)
	defer bar.Done()
	// ImageReader.WriteTo hands its buffers to the writer directly; the
	// progress bar counts them on the way.
	if *out == "-" {
		_, err = ir.WriteTo(io.MultiWriter(env.stdout, bar.Writer()))
		return err
	}
	// The image goes to a temporary file renamed into place only once its
	// digests matched, so a failed extract leaves no plausible image.
	err = atomicfile.Write(*out, 0o644, func(w io.Writer) error {
		f, ok := w.(*os.File)
		if !ok {
			_, err := ir.WriteTo(io.MultiWriter(w, bar.Writer()))
			return err
		}
		// Zero blocks become holes, as zstd and cp --sparse do.
		sw := newSparseWriter(f)
		if _, err := ir.WriteTo(io.MultiWriter(sw, bar.Writer())); err != nil {
			return err
		}
		return sw.Finish()
	})
	if err != nil {
		return err
	}
	bar.Done()
	fmt.Fprintf(env.stdout, "wrote %s: %s image, %d bytes, sha256 %s (verified)\n",
		*out, ir.Info.Class, ir.Info.Size, ir.Info.SHA256)
	return nil
}
