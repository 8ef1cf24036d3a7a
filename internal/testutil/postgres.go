package testutil

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Limits of the test PostgreSQL server.
const (
	// postgresStartTimeout bounds initdb and the server's start.
	postgresStartTimeout = 60 * time.Second

	// postgresStopTimeout bounds the wait for the server to exit.
	postgresStopTimeout = 10 * time.Second

	// postgresAdminTimeout bounds creating or dropping one database.
	postgresAdminTimeout = 30 * time.Second

	// postgresMaxConns leaves room for many stores open at once, each
	// with a pool of its own.
	postgresMaxConns = 300

	// postgresStaleAge is how old the data directory of a server that
	// no longer runs must be before another test binary removes it.
	postgresStaleAge = 10 * time.Minute

	// postgresDirPattern names the servers' data directories.
	postgresDirPattern = "rota-postgres-*"
)

// postgres is the server shared by the tests of one test binary.
var postgres struct {
	once sync.Once
	srv  *postgresServer
	err  error
	seq  atomic.Int64
}

// postgresServer is a running postgres with its data in dir.
type postgresServer struct {
	dir  string
	log  string
	port int
	cmd  *exec.Cmd
	done chan struct{} // closed when the server has exited
}

// StartPostgres returns the URL of a new, empty database on a PostgreSQL
// server from Debian's postgresql package, the newest version installed
// under /usr/lib/postgresql. The first call in a test binary starts the
// server, on a loopback port with its data in a temporary directory and
// fsync on; each call creates a database of its own, dropped when the
// test ends.
//
// The server dies with the test binary. TestMain should still call
// StopPostgres after the tests, which also removes the data directory;
// one left behind is removed by a later test binary.
// When postgres is missing the test fails under CI and is skipped
// otherwise. As root, the server runs as the postgres user, since
// PostgreSQL refuses to run as root.
func StartPostgres(t testing.TB) string {
	t.Helper()
	bin := postgresBinDir(t)
	postgres.once.Do(func() {
		// Replaced below unless the start ends the test halfway.
		postgres.err = errors.New("postgres start did not finish")
		postgres.srv, postgres.err = startPostgres(bin, FreePort(t))
	})
	if postgres.err != nil {
		t.Fatalf("start postgres: %v", postgres.err)
	}
	srv := postgres.srv

	name := fmt.Sprintf("rota_test_%d", postgres.seq.Add(1))
	if err := srv.admin(`CREATE DATABASE ` + name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		select {
		case <-srv.done:
			return // stopped already, and its data removed
		default:
		}
		if err := srv.admin(`DROP DATABASE ` + name + ` WITH (FORCE)`); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return srv.url(name)
}

// StopPostgres stops the server StartPostgres started, if any, and
// removes its data. Call it from TestMain after m.Run.
func StopPostgres() {
	srv := postgres.srv
	if srv == nil {
		return
	}
	postgres.srv, postgres.err = nil, errors.New("postgres was stopped")
	srv.stop()
}

// postgresBinDir returns the bin directory of the newest PostgreSQL
// installed from Debian's packages. It does not look on PATH, where
// another installation may sit, so that the tests run the same binaries
// on every machine.
func postgresBinDir(t testing.TB) string {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	best, bestVersion := "", -1.0
	for _, b := range bins {
		dir := filepath.Dir(b)
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		if err != nil || v <= bestVersion {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			best, bestVersion = dir, v
		}
	}
	if best == "" {
		toolMissing(t, "postgres (Debian package postgresql)")
	}
	return best
}

// startPostgres creates a cluster and starts its server on port.
func startPostgres(bin string, port int) (*postgresServer, error) {
	removeStalePostgres()
	dir, err := os.MkdirTemp("", postgresDirPattern)
	if err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	srv := &postgresServer{dir: dir, log: filepath.Join(dir, "postgres.log"), port: port,
		done: make(chan struct{})}
	if err := srv.start(bin); err != nil {
		log := srv.logText()
		srv.stop()
		return nil, fmt.Errorf("%w\n%s", err, log)
	}
	return srv, nil
}

func (srv *postgresServer) start(bin string) error {
	cred, err := postgresCredential(srv.dir)
	if err != nil {
		return err
	}
	logf, err := os.Create(srv.log)
	if err != nil {
		return fmt.Errorf("create server log: %w", err)
	}
	defer logf.Close()

	// The cluster is thrown away after the tests, so initdb need not
	// sync it; the server below runs with fsync on, like a real one.
	data := filepath.Join(srv.dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
	initdb.Dir = srv.dir
	initdb.Stdout, initdb.Stderr = logf, logf
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if err := initdb.Run(); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}

	srv.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data,
		"-p", strconv.Itoa(srv.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=",
		"-c", "fsync=on",
		"-c", "max_connections="+strconv.Itoa(postgresMaxConns))
	srv.cmd.Dir = srv.dir
	srv.cmd.Stdout, srv.cmd.Stderr = logf, logf
	// SIGQUIT, an immediate shutdown, ends the server and its backends
	// when the test binary dies without calling StopPostgres.
	srv.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT}

	// The parent-death signal fires when the thread that started the
	// server exits, not the process; this thread stays locked, and so
	// alive, until the server has exited.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := srv.cmd.Start()
		started <- err
		if err == nil {
			srv.cmd.Wait()
		}
		close(srv.done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	return srv.waitReady()
}

// removeStalePostgres removes the data directories that servers left
// when their test binary ended without StopPostgres: those old enough and
// with no postmaster.pid, which a running server keeps.
func removeStalePostgres() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), postgresDirPattern))
	for _, dir := range dirs {
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() || time.Since(fi.ModTime()) < postgresStaleAge {
			continue
		}
		_, err = os.Stat(filepath.Join(dir, "data", "postmaster.pid"))
		if errors.Is(err, fs.ErrNotExist) {
			os.RemoveAll(dir)
		}
	}
}

// postgresCredential returns who runs the server: nil, the test's own
// user, unless that is root, which PostgreSQL refuses; then the postgres
// user, made the owner of dir.
func postgresCredential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("run postgres as root: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("user postgres: %w", err)
	}
	if err := os.Chown(dir, int(uid), int(gid)); err != nil {
		return nil, fmt.Errorf("give data directory to postgres: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// waitReady waits until the server accepts connections.
func (srv *postgresServer) waitReady() error {
	deadline := time.Now().Add(postgresStartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := pgx.Connect(ctx, srv.url("postgres"))
		cancel()
		if err == nil {
			return c.Close(context.Background())
		}
		select {
		case <-srv.done:
			return fmt.Errorf("postgres exited: %s", srv.cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections on port %d: %w",
				srv.port, err)
		}
	}
}

// admin runs one statement on the maintenance database.
func (srv *postgresServer) admin(stmt string) error {
	ctx, cancel := context.WithTimeout(context.Background(), postgresAdminTimeout)
	defer cancel()
	c, err := pgx.Connect(ctx, srv.url("postgres"))
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, stmt)
	return err
}

func (srv *postgresServer) url(database string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", srv.port, database)
}

// stop ends the server, if it runs, and removes its data.
func (srv *postgresServer) stop() {
	if srv.cmd != nil && srv.cmd.Process != nil {
		srv.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-srv.done:
		case <-time.After(postgresStopTimeout):
			srv.cmd.Process.Kill()
			<-srv.done
		}
	}
	os.RemoveAll(srv.dir)
}

// logText returns the end of the server's log, for a failure message.
func (srv *postgresServer) logText() string {
	b, err := os.ReadFile(srv.log)
	if err != nil {
		return fmt.Sprintf("(no server log: %v)", err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return "server log:\n" + strings.Join(lines[max(0, len(lines)-50):], "\n")
}
