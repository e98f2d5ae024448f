// Package client is configd's SDK for applications.
//
// Cache reads a namespace's files from the directory the host agent keeps
// (`<dir>/current -> releases/<version>`), holds them in memory, notices the
// agent's symlink swap and calls registered callbacks with the new version.
// It needs no agent running: the cache on disk is enough.
//
// Remote talks to configd servers over HTTP, with failover across several:
// publish and read configuration, and use the naming service (Hosts,
// Events) to find the live hosts of an app.
package client
