//! A private PostgreSQL cluster (the shared test kit's), and one that accepts only TLS.

pub use testkit::postgres::Postgres;

/// A server that accepts only TLS connections, with a self-signed certificate for
/// localhost / 127.0.0.1; returns it and the certificate's PEM.
pub fn start_tls_only() -> (Postgres, String) {
    let pg = Postgres::start();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let data = pg.data();
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
    pg.give_to_postgres(&data).unwrap();
    pg.stop_server();
    pg.start_server().unwrap();
    (pg, cert.cert.pem())
}
