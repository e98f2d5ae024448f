package release

import (
	"bytes"
	"fmt"
	"os"
	"text/template"

	"github.com/opskit/opskit/configd/client"
)

// Template renders one file of a release from a configd namespace as the
// host's configd agent cached it.
type Template struct {
	// Src and Dest are paths inside the release; Dest is (over)written.
	Src  string `yaml:"src" json:"src"`
	Dest string `yaml:"dest" json:"dest"`
	// Namespace is the configd namespace (app/env/name) the template reads.
	Namespace string `yaml:"namespace" json:"namespace"`
}

// TemplateData is what a template sees: {{.Config.Property "app.properties"
// "port" "8080"}}, {{.Config.String "motd.txt" ""}}, {{.App}}, {{.Version}}.
type TemplateData struct {
	App, Version string
	Config       *client.Snapshot
}

// RenderTemplates renders a release's templates with text/template from
// the configd cache directory. Paths are resolved inside the release only.
func RenderTemplates(dir, app, version, cacheDir string, tmpls []Template) error {
	if len(tmpls) == 0 {
		return nil
	}
	if cacheDir == "" {
		return fmt.Errorf("the release has config templates but the agent has no --configd-cache")
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, t := range tmpls {
		src, err := cleanName(t.Src)
		if err != nil || src == "" {
			return fmt.Errorf("template src %q: must be a path inside the release", t.Src)
		}
		dest, err := cleanName(t.Dest)
		if err != nil || dest == "" {
			return fmt.Errorf("template dest %q: must be a path inside the release", t.Dest)
		}
		text, err := root.ReadFile(src)
		if err != nil {
			return fmt.Errorf("template %s: %w", t.Src, err)
		}
		info, err := root.Stat(src)
		if err != nil {
			return err
		}
		cache, err := client.OpenNamespace(cacheDir, t.Namespace, client.CacheOptions{PollInterval: -1})
		if err != nil {
			return fmt.Errorf("template %s: configd namespace %s: %w", t.Src, t.Namespace, err)
		}
		snap := cache.Snapshot()
		cache.Close()
		tmpl, err := template.New(t.Src).Option("missingkey=error").Parse(string(text))
		if err != nil {
			return fmt.Errorf("template %s: %w", t.Src, err)
		}
		var out bytes.Buffer
		if err := tmpl.Execute(&out, TemplateData{App: app, Version: version, Config: snap}); err != nil {
			return fmt.Errorf("template %s: %w", t.Src, err)
		}
		tmp := dest + ".rendering"
		if err := root.WriteFile(tmp, out.Bytes(), info.Mode().Perm()); err != nil {
			return fmt.Errorf("template %s: %w", t.Dest, err)
		}
		if err := root.Rename(tmp, dest); err != nil {
			return fmt.Errorf("template %s: %w", t.Dest, err)
		}
	}
	return nil
}
