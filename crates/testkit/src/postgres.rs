//! A private PostgreSQL server from Debian's server binaries, on a free loopback port,
//! in a temporary folder, trusting local connections; stopped (immediately) and its
//! folder removed on drop. As root, the cluster belongs to the `postgres` user (initdb
//! refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running private server.
pub struct Postgres {
    /// Its folder: `data/` (the cluster), `server.log`, the Unix socket.
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    as_postgres_user: bool,
}

/// The newest server binaries under /usr/lib/postgresql, or what to install.
fn bin_dir() -> Result<PathBuf, String> {
    let install = "PostgreSQL is required: install it with `apt-get install -y postgresql` (scripts/setup-test-deps.sh does this)";
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| install.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().ok_or_else(|| install.to_string())
}

fn run(cmd: &mut Command, what: &str) -> Result<std::process::Output, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

impl Postgres {
    /// A new cluster, started; panics with what went wrong (for tests).
    pub fn start() -> Postgres {
        Self::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// A new cluster, started.
    pub fn try_start() -> Result<Postgres, String> {
        let bin = bin_dir()?;
        let dir = std::env::temp_dir().join(format!(
            "streamgate-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| e.to_string())?;
        let as_postgres_user = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let pg = Postgres {
            port: crate::free_port().map_err(|e| e.to_string())?,
            dir,
            bin,
            as_postgres_user,
        };
        pg.give_to_postgres(&pg.dir)?;
        run(
            pg.cmd("initdb").arg("-D").arg(pg.data()).args([
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ]),
            "initdb",
        )?;
        pg.start_server()?;
        Ok(pg)
    }

    /// The cluster's folder.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command of the server's binaries, run as the cluster's owner.
    pub fn cmd(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// Makes `path` the cluster owner's (as root; nothing otherwise).
    pub fn give_to_postgres(&self, path: &Path) -> Result<(), String> {
        if self.as_postgres_user {
            run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(path),
                "chown",
            )?;
        }
        Ok(())
    }

    /// Starts (or restarts) the server on the same data and port.
    pub fn start_server(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        run(
            self.cmd("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-o", &opts, "-l"])
                .arg(self.dir.join("server.log"))
                .args(["-w", "-t", "30", "start"])
                .stdout(Stdio::null()),
            "pg_ctl start",
        )
        .map(|_| ())
        .map_err(|e| {
            format!(
                "{e}\n{}",
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            )
        })
    }

    /// Stops the server at once (an outage).
    pub fn stop_server(&self) {
        let _ = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// psql connected to `db` as `postgres`, stopping at the first error; add the
    /// statements (`-c`, `-f` or stdin).
    pub fn psql_command(&self, db: &str) -> Command {
        let mut c = Command::new(self.bin.join("psql"));
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1"]);
        c
    }

    /// Runs SQL in `db` with psql; its unaligned, tuples-only output, or its error.
    pub fn psql_result(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = self
            .psql_command(db)
            .args(["-qAt", "-c", sql])
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// [`Postgres::psql_result`], panicking on an error (for tests).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.psql_result(db, sql)
            .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    }

    /// A fresh database.
    pub fn create_db(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name.to_string()
    }

    /// The URL of `db`, as `postgres`, without TLS.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// The server's main process (its backends are its children).
    pub fn postmaster_pid(&self) -> Result<u32, String> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .map_err(|e| format!("postmaster.pid: {e}"))?;
        text.lines()
            .next()
            .unwrap_or_default()
            .trim()
            .parse()
            .map_err(|e| format!("postmaster.pid: {e}"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_server();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
