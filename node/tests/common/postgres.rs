//! A private PostgreSQL cluster from Debian's server binaries, on a free loopback port,
//! in a temporary folder; stopped on drop.

use std::path::PathBuf;
use std::process::Command;

use super::{free_port, TempDir};

/// A private PostgreSQL server (Debian's binaries) on a free loopback port, in a
/// temporary folder; stopped, by its data directory, on drop.
pub struct Postgres {
    pub dir: TempDir,
    pub port: u16,
    bin: PathBuf,
    as_postgres_user: bool,
}

fn pg_bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap_or_else(|_| panic!("PostgreSQL is required: install it with `apt-get install -y postgresql` (scripts/setup-test-deps.sh does this)"))
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = pg_bin_dir();
        let dir = TempDir::new("pg");
        let uid = Command::new("id").arg("-u").output().unwrap();
        let as_postgres_user = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        if as_postgres_user {
            // initdb refuses to run as root; the cluster belongs to `postgres`.
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir.0)
                .status()
                .unwrap();
            assert!(st.success());
        }
        let pg = Postgres {
            dir,
            port: free_port(),
            bin,
            as_postgres_user,
        };
        let data = pg.dir.0.join("data");
        let out = pg
            .cmd("initdb")
            .arg("-D")
            .arg(&data)
            .args(["--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.start_server();
        pg
    }

    fn cmd(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// A server that accepts only TLS connections, with a self-signed certificate for
    /// localhost / 127.0.0.1; returns it and the certificate's PEM.
    pub fn start_tls_only() -> (Postgres, String) {
        let pg = Postgres::start();
        let cert = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let data = pg.dir.0.join("data");
        std::fs::write(data.join("server.crt"), cert.cert.pem()).unwrap();
        std::fs::write(data.join("server.key"), cert.key_pair.serialize_pem()).unwrap();
        std::fs::set_permissions(
            data.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n";
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        let conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        std::fs::write(data.join("postgresql.conf"), conf + "\nssl = on\n").unwrap();
        if pg.as_postgres_user {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data)
                .status()
                .unwrap();
            assert!(st.success());
        }
        pg.stop_server();
        pg.start_server();
        (pg, cert.cert.pem())
    }

    /// Starts (or restarts) the server on the same data and port.
    pub fn start_server(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.0.display()
        );
        let out = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.dir.0.join("data"))
            .args(["-o", &opts, "-l"])
            .arg(self.dir.0.join("server.log"))
            .args(["-w", "-t", "30", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.0.join("server.log")).unwrap_or_default()
        );
    }

    /// Stops the server at once (an outage).
    pub fn stop_server(&self) {
        let _ = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.dir.0.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }

    /// psql connected to `db` as `postgres`, stopping at the first error; add the
    /// statements (`-c`, `-f` or stdin).
    pub fn psql_command(&self, db: &str) -> Command {
        let mut c = Command::new(self.bin.join("psql"));
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1"]);
        c
    }

    /// Runs SQL with psql as `postgres`; returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.psql_result(db, sql)
            .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    }

    /// Like `psql`, but returns the error output instead of failing.
    pub fn psql_result(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = self
            .psql_command(db)
            .args(["-qAt", "-c", sql])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// A fresh database for one test.
    pub fn create_db(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name.to_string()
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_server();
    }
}
