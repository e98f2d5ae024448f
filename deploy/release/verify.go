package release

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// ErrChecksum is wrapped when a package does not have the expected sha256.
var ErrChecksum = errors.New("sha256 mismatch")

// ErrSignature is wrapped when a signature is missing, malformed or made by
// no trusted key.
var ErrSignature = errors.New("bad signature")

// FileSHA256 returns the hex sha256 of a file.
func FileSHA256(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// VerifySHA256 checks a file against the expected hex digest.
func VerifySHA256(name, want string) error {
	want = strings.ToLower(strings.TrimPrefix(strings.TrimSpace(want), "sha256:"))
	if len(want) != 64 {
		return fmt.Errorf("%w: expected digest %q is not 64 hex digits", ErrChecksum, want)
	}
	got, err := FileSHA256(name)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%w: package %s has %s, task expects %s", ErrChecksum, name, got, want)
	}
	return nil
}

// SignedMessage is what a package signature signs: the package's digest,
// so that a signature costs nothing to check once the digest is verified.
func SignedMessage(sha256Hex string) []byte {
	return []byte("opskit-deploy-package sha256:" + strings.ToLower(sha256Hex) + "\n")
}

// ParsePublicKeys reads trusted keys: one base64 (std) ed25519 public key
// per line; blank lines and # comments are ignored.
func ParsePublicKeys(text string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(strings.Fields(line)[0])
		if err != nil || len(b) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("key line %d: want a base64 ed25519 public key of %d bytes", i+1, ed25519.PublicKeySize)
		}
		keys = append(keys, ed25519.PublicKey(b))
	}
	return keys, nil
}

// VerifySignature checks a base64 ed25519 signature of SignedMessage(digest)
// against the trusted keys.
func VerifySignature(sha256Hex, signatureB64 string, keys []ed25519.PublicKey) error {
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(signatureB64))
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: not a base64 ed25519 signature", ErrSignature)
	}
	if len(keys) == 0 {
		return fmt.Errorf("%w: the task is signed but no keys are trusted (--trusted-keys)", ErrSignature)
	}
	msg := SignedMessage(sha256Hex)
	for _, k := range keys {
		if ed25519.Verify(k, msg, sig) {
			return nil
		}
	}
	return fmt.Errorf("%w: made by none of the %d trusted keys", ErrSignature, len(keys))
}
