//! Certificates from a private CA, made with `openssl` in a directory of
//! their own, for servers on 127.0.0.1 that clients are to verify.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `openssl <args>` in `dir`; panics with what it said if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The kind of key the CA and the server get.
#[derive(Debug, Clone, Copy)]
pub enum Key {
    Rsa2048,
    /// ECDSA on P-256.
    P256,
}

impl Key {
    /// `openssl req` arguments that make a new key of this kind.
    fn newkey(self) -> &'static [&'static str] {
        match self {
            Key::Rsa2048 => &["-newkey", "rsa:2048"],
            Key::P256 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
        }
    }
}

/// A CA (`ca.crt`) and a certificate for 127.0.0.1 signed by it
/// (`server.crt`, `server.key`), valid for two days.
pub struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    pub fn new(key: Key) -> Certificates {
        let dir = tempfile::tempdir().unwrap();
        let req = |head: &[&str], tail: &[&str]| {
            openssl(dir.path(), &[head, key.newkey(), tail].concat());
        };
        req(
            &["req", "-x509", "-nodes"],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=pgbroadcast test CA",
            ],
        );
        req(
            &["req", "-nodes"],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        std::fs::write(dir.path().join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(
            dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "ext",
            ],
        );
        Certificates { dir }
    }

    /// The directory they are in (others may be put there too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA's certificate: what a client trusts.
    pub fn ca(&self) -> PathBuf {
        self.dir().join("ca.crt")
    }

    /// The server's certificate.
    pub fn cert(&self) -> PathBuf {
        self.dir().join("server.crt")
    }

    /// The server's private key.
    pub fn key(&self) -> PathBuf {
        self.dir().join("server.key")
    }
}
