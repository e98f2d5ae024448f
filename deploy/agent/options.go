package agent

import (
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/deploy/release"
)

// ReleaseOptions are the flags of release handling, shared by the daemon
// and `deploy apply`.
type ReleaseOptions struct {
	Root             string
	Keep             int
	TrustedKeys      string
	RequireSignature bool
	MaxBytes         int64
	MaxFiles         int
	HealthInterval   time.Duration
	DownloadTimeout  time.Duration
	ConfigdCache     string
}

// Flags registers the options.
func (o *ReleaseOptions) Flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Root, "root", "", "directory of the apps' releases: <root>/<app>/releases/<version> and <root>/<app>/current (default <data-dir>/apps)")
	fs.IntVar(&o.Keep, "keep", 5, "releases kept per app (current and the one before it are always kept)")
	fs.StringVar(&o.TrustedKeys, "trusted-keys", "", "file of base64 ed25519 public keys, one a line, that task signatures are checked against")
	fs.BoolVar(&o.RequireSignature, "require-signature", false, "refuse tasks without a signature by a trusted key")
	fs.Int64Var(&o.MaxBytes, "max-unpacked-bytes", release.DefaultMaxBytes, "most bytes one package may unpack to")
	fs.IntVar(&o.MaxFiles, "max-unpacked-files", release.DefaultMaxFiles, "most entries one package may hold")
	fs.DurationVar(&o.HealthInterval, "health-interval", time.Second, "wait between tries of a release's health hook")
	fs.StringVar(&o.ConfigdCache, "configd-cache", "", "the configd agent's cache directory, read by releases' config templates")
	fs.DurationVar(&o.DownloadTimeout, "download-timeout", 10*time.Minute, "deadline of one package download")
}

// Applier builds the store and applier under dataDir.
func (o *ReleaseOptions) Applier(dataDir string, log *slog.Logger) (*release.Store, *release.Applier, error) {
	root := o.Root
	if root == "" {
		root = filepath.Join(dataDir, "apps")
	}
	store := &release.Store{Root: root}
	a := &release.Applier{
		Store: store, TaskDir: filepath.Join(dataDir, "tasks"), CacheDir: filepath.Join(dataDir, "packages"),
		RequireSignature: o.RequireSignature, Limits: release.Limits{MaxBytes: o.MaxBytes, MaxFiles: o.MaxFiles},
		Keep: o.Keep, HTTP: &http.Client{Timeout: o.DownloadTimeout}, HealthInterval: o.HealthInterval, ConfigCache: o.ConfigdCache, Log: log,
	}
	if o.TrustedKeys != "" {
		b, err := os.ReadFile(o.TrustedKeys)
		if err != nil {
			return nil, nil, err
		}
		keys, err := release.ParsePublicKeys(string(b))
		if err != nil {
			return nil, nil, err
		}
		a.Keys = keys
	}
	return store, a, nil
}
