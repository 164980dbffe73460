//! Test certificates from the `openssl` CLI in a temp dir: a CA, a server certificate for
//! localhost/127.0.0.1 (EC, PKCS#8 and SEC1 key files), an RSA one with a PKCS#1 key, a client
//! certificate from the CA and one from a foreign CA.

use std::path::Path;
use std::process::Command;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

pub struct Certs {
    pub dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

impl Certs {
    pub fn generate() -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("pgpivot-tls")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for ca in ["ca", "foreign-ca"] {
            let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
            args.extend(EC);
            let (key, crt, subj) = (
                format!("{ca}.key"),
                format!("{ca}.crt"),
                format!("/CN={ca}"),
            );
            args.extend(["-keyout", &key, "-out", &crt, "-subj", &subj]);
            args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
            args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
            openssl(d, &args);
        }
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        let d = d.to_path_buf();
        let d = d.as_path();
        let certs = Certs { dir };
        certs.issue("server", "ca", "localhost", "server.ext", 1001, EC);
        openssl(d, &["ec", "-in", "server.key", "-out", "server.sec1.key"]);
        certs.issue(
            "rsa",
            "ca",
            "localhost",
            "server.ext",
            1002,
            &["-newkey", "rsa:2048"],
        );
        openssl(
            d,
            &[
                "rsa",
                "-in",
                "rsa.key",
                "-traditional",
                "-out",
                "rsa.pkcs1.key",
            ],
        );
        certs.issue("client", "ca", "app", "client.ext", 1003, EC);
        certs.issue("foreign", "foreign-ca", "app", "client.ext", 1004, EC);
        // libpq refuses client keys others can read.
        use std::os::unix::fs::PermissionsExt;
        for k in ["client.key", "foreign.key"] {
            std::fs::set_permissions(d.join(k), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        certs
    }

    /// `<name>.key` (new) and `<name>.crt` signed by `ca`.
    fn issue(&self, name: &str, ca: &str, cn: &str, ext: &str, serial: u32, keyopts: &[&str]) {
        let d = self.dir.path();
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        let subj = format!("/CN={cn}");
        let mut args = vec!["req", "-nodes"];
        args.extend(keyopts);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(d, &args);
        let (ca_crt, ca_key, serial) =
            (format!("{ca}.crt"), format!("{ca}.key"), serial.to_string());
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-set_serial",
                &serial,
                "-days",
                "2",
                "-extfile",
                ext,
                "-out",
                &crt,
            ],
        );
    }

    /// A new server key and certificate (another serial) at the same paths, as a Kubernetes
    /// secret update would leave them.
    pub fn rotate_server(&self, serial: u32) {
        self.issue("server", "ca", "localhost", "server.ext", serial, EC);
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The DER of the first certificate in a PEM file.
    pub fn der(&self, name: &str) -> Vec<u8> {
        CertificateDer::pem_file_iter(self.dir.path().join(name))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }
}
